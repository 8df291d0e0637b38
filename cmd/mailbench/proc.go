package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// readRSS returns the resident memory of pid in bytes (VmRSS in
// /proc/PID/status). With tree it returns the sum over pid and every
// descendant of their proportional set size (Pss in
// /proc/PID/smaps_rollup: each shared page split among the processes that
// map it), which is how a multi-process server such as Dovecot is measured
// without counting its shared libraries once per process.
func readRSS(pid int, tree bool) (int64, error) {
	pids := []int{pid}
	if tree {
		var err error
		if pids, err = descendants(pid); err != nil {
			return 0, err
		}
	}
	var total int64
	read := vmRSS
	if tree {
		read = pss
	}
	for i, p := range pids {
		rss, err := read(p)
		if err != nil {
			if i == 0 {
				return 0, err
			}
			continue // a child that exited meanwhile
		}
		total += rss
	}
	return total, nil
}

// vmRSS reads VmRSS of one process.
func vmRSS(pid int) (int64, error) { return procKB(pid, "status", "VmRSS:") }

// pss reads the proportional set size of one process.
func pss(pid int) (int64, error) { return procKB(pid, "smaps_rollup", "Pss:") }

// procKB reads a "Key:   12345 kB" line of /proc/PID/file, in bytes.
func procKB(pid int, file, key string) (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
	if err != nil {
		return 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), key)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return kb << 10, nil
			}
		}
		return 0, fmt.Errorf("pid %d: malformed %s line %q", pid, file, sc.Text())
	}
	return 0, fmt.Errorf("pid %d: no %s in %s (a kernel thread or a zombie?)", pid, key, file)
}

// descendants returns pid followed by all its descendants, from the parent
// links in /proc/*/stat.
func descendants(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name is in parentheses and may hold spaces; the
		// parent PID is the second field after the closing one.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

// rssValue is an optional memory reading for a summary line.
type rssValue string

// rssField reads the memory of pid for a summary; "" when pid is 0, "error"
// when it cannot be read.
func rssField(pid int, tree bool) rssValue {
	if pid == 0 {
		return ""
	}
	rss, err := readRSS(pid, tree)
	if err != nil {
		return "error"
	}
	return rssValue(mib(rss))
}

// prefixed returns prefix+value, or "" for no reading.
func (v rssValue) prefixed(prefix string) string {
	if v == "" {
		return ""
	}
	return prefix + string(v)
}

func runRSS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rss", stderr)
	pid := fs.Int("pid", 0, "process `PID`")
	tree := fs.Bool("pid-tree", false, "sum the proportional set size (Pss) of the process and all its descendants")
	label := fs.String("label", "", "free text copied into the summary line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pid <= 0 {
		fmt.Fprintln(stderr, "rss: -pid is required")
		return errUsage
	}
	rss, err := readRSS(*pid, *tree)
	if err != nil {
		return fmt.Errorf("rss: %w", err)
	}
	procs := 1
	if *tree {
		if p, err := descendants(*pid); err == nil {
			procs = len(p)
		}
	}
	fmt.Fprintf(stdout, "rss label=%s pid=%d procs=%d rss=%s at=%s\n", field(*label), *pid, procs, mib(rss), time.Now().UTC().Format(time.RFC3339))
	return nil
}
