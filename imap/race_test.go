//go:build race

package imap

// raceEnabled scales down load tests under the race detector, which makes
// argon2id logins many times slower.
const raceEnabled = true
