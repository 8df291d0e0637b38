//go:build !unix

package main

// lockDataDir does nothing where flock(2) is not available.
func lockDataDir(dir string) (release func(), err error) { return func() {}, nil }
