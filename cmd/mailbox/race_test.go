//go:build race

package main

// raceEnabled makes TestMain build the binary under test with -race too, so
// the end-to-end tests also look for data races in the real process.
const raceEnabled = true
