//go:build race

package smtp

// raceEnabled: tests that measure speed or memory skip under -race.
const raceEnabled = true
