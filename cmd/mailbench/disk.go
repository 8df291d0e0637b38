package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults of the fsync and maildir-fill subcommands.
const (
	defaultFsyncCount = 2000
	defaultFsyncSize  = 4096 // bytes appended before each sync
	defaultFillCount  = 10000
)

// runFsync measures how many small appends followed by fsync the disk
// under dir completes per second: the ceiling for any server that syncs
// each message on its own, and the figure group commit has to beat.
func runFsync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fsync", stderr)
	dir := fs.String("dir", os.TempDir(), "directory on the disk to measure")
	count := fs.Int("count", defaultFsyncCount, "append+fsync operations")
	size := fs.Int("size", defaultFsyncSize, "`bytes` appended before each fsync")
	timeout := fs.Duration("timeout", time.Minute, "bound on the run")
	label := fs.String("label", "", "free text copied into the summary line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *count < 1 || *size < 1 || *timeout <= 0 {
		fmt.Fprintln(stderr, "fsync: -count, -size and -timeout must be positive")
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	f, err := os.CreateTemp(*dir, "mailbench-fsync-*")
	if err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	buf := []byte(strings.Repeat("x", *size-1) + "\n")
	rec := newRecorder(*count)
	t0 := time.Now()
	for range *count {
		if ctx.Err() != nil {
			break
		}
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return fmt.Errorf("fsync: write: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
		rec.ok(time.Since(t))
	}
	dur := time.Since(t0)
	ok, _ := rec.counts()
	fmt.Fprintf(stdout, "fsync label=%s dir=%s size=%d syncs=%d dur=%s rate=%s %s\n",
		field(*label), field(*dir), *size, ok, secs(dur), rate(ok, dur), rec.latencyFields())
	return nil
}

// runMaildirFill writes messages straight into a Maildir's cur/ folder, the
// way a delivery agent does (write to tmp/, rename into place), so a
// Dovecot mailbox can be filled with thousands of messages in seconds. File
// names carry S= (file size, LF line ends as Maildir stores them) and W=
// (size with CRLF, what POP3 reports), so Dovecot need not read the files
// to answer STAT and LIST. Files are not synced: this prepares a benchmark,
// it does not deliver mail.
func runMaildirFill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("maildir-fill", stderr)
	dir := fs.String("dir", "", "Maildir to fill (created with cur/ new/ tmp/ if missing; required)")
	count := fs.Int("count", defaultFillCount, "messages to write")
	size := fs.Int("size", defaultSize, "message size in `bytes` with CRLF line ends")
	to := fs.String("rcpt", defaultRcpt, "To: address of the messages")
	from := fs.String("from", defaultFrom, "From: address of the messages")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the run")
	rareWord := fs.String("rare-word", defaultRareWord, "word that opens the body of every -rare-every-th message (\"\": none)")
	rareEvery := fs.Int("rare-every", defaultRareEvery, "messages 0, N, 2N, ... carry -rare-word")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" || *count < 1 || *size < 1 || *timeout <= 0 {
		fmt.Fprintln(stderr, "maildir-fill: -dir is required; -count, -size and -timeout must be positive")
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(*dir, sub), 0o700); err != nil {
			return fmt.Errorf("maildir-fill: %w", err)
		}
	}

	spec := messageSpec{From: *from, To: []string{*to}, Size: *size, RunID: newRunID(), RareWord: *rareWord, RareEvery: *rareEvery}
	gen := newGenerator(spec, newCorpus(uint64(time.Now().UnixNano())))
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	host = strings.NewReplacer("/", `\057`, ":", `\072`).Replace(host)
	pid := os.Getpid()
	now := time.Now()
	t0 := now
	var lf []byte
	written := 0
	for seq := range *count {
		if ctx.Err() != nil {
			break
		}
		// Spread internal dates over the last seconds, oldest first.
		date := now.Add(time.Duration(seq-*count) * time.Millisecond)
		msg, err := gen.message(seq, date)
		if err != nil {
			return fmt.Errorf("maildir-fill: %w", err)
		}
		lf = append(lf[:0], msg...)
		lf = []byte(strings.ReplaceAll(string(lf), "\r\n", "\n"))
		base := strconv.FormatInt(date.Unix(), 10) + ".M" + strconv.FormatInt(int64(date.Nanosecond()/1000), 10) +
			"P" + strconv.Itoa(pid) + "Q" + strconv.Itoa(seq) + "." + host
		tmp := filepath.Join(*dir, "tmp", base)
		if err := os.WriteFile(tmp, lf, 0o600); err != nil {
			return fmt.Errorf("maildir-fill: %w", err)
		}
		final := filepath.Join(*dir, "cur", fmt.Sprintf("%s,S=%d,W=%d:2,", base, len(lf), len(msg)))
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("maildir-fill: %w", err)
		}
		if err := os.Chtimes(final, date, date); err != nil {
			return fmt.Errorf("maildir-fill: %w", err)
		}
		written++
	}
	dur := time.Since(t0)
	fmt.Fprintf(stdout, "maildir-fill dir=%s size=%d written=%d dur=%s rate=%s\n",
		field(*dir), *size, written, secs(dur), rate(written, dur))
	if written < *count {
		return fmt.Errorf("maildir-fill: wrote %d of %d messages before the %s timeout", written, *count, *timeout)
	}
	return nil
}
