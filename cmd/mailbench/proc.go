package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// readRSS returns the resident memory of the roots in bytes (the sum of
// VmRSS in /proc/PID/status). With tree it returns the sum over the roots
// and every descendant of their proportional set size (Pss in
// /proc/PID/smaps_rollup: each shared page split among the processes that
// map it), which is how a multi-process server such as Dovecot is measured
// without counting its shared libraries once per process.
func readRSS(roots pidList, tree bool) (int64, error) {
	pids, err := expand(roots, tree)
	if err != nil {
		return 0, err
	}
	var total int64
	read := vmRSS
	if tree {
		read = pss
	}
	for _, p := range pids {
		rss, err := read(p)
		if err != nil {
			if slices.Contains(roots, p) {
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

// pidList is the value of a -pid flag: one or more comma-separated PIDs
// (e.g. Postfix's and Dovecot's master processes), measured as one server.
type pidList []int

func (l *pidList) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = strconv.Itoa(p)
	}
	return strings.Join(parts, ",")
}

func (l *pidList) Set(v string) error {
	*l = nil
	for part := range strings.SplitSeq(v, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || p <= 0 {
			return fmt.Errorf("%q is not a PID", part)
		}
		*l = append(*l, p)
	}
	return nil
}

// expand returns roots and, with tree, every descendant of each, without
// repeats; the roots come first.
func expand(roots pidList, tree bool) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, r := range roots {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	if !tree {
		return out, nil
	}
	for _, r := range roots {
		d, err := descendants(r)
		if err != nil {
			return nil, err
		}
		for _, p := range d[1:] {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
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

// clockTicks is the unit of the times in /proc/PID/stat (USER_HZ); it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// readCPU returns the CPU time (user + system) pid has used so far. With
// tree it also counts every live descendant, and for each process the time
// of children it has already reaped (cutime, cstime), so short-lived
// workers (Dovecot's lmtp, Postfix's smtpd) are counted once each.
func readCPU(roots pidList, tree bool) (time.Duration, error) {
	pids, err := expand(roots, tree)
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, p := range pids {
		data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "stat"))
		if err != nil {
			if slices.Contains(roots, p) {
				return 0, fmt.Errorf("read cpu time of pid %d: %w", p, err)
			}
			continue
		}
		// Fields after the ")" that closes the command name start at
		// field 3 (state); utime, stime, cutime, cstime are 14 to 17.
		j := bytes.LastIndexByte(data, ')')
		f := strings.Fields(string(data[j+1:]))
		if j < 0 || len(f) < 16 {
			return 0, fmt.Errorf("pid %d: malformed stat", p)
		}
		last := 13 // stime
		if tree {
			last = 15 // cstime
		}
		for _, v := range f[11 : last+1] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("pid %d: malformed stat", p)
			}
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuMeter measures the server's CPU time over one run.
type cpuMeter struct {
	pid   pidList
	tree  bool
	start time.Duration
	ok    bool
}

func startCPU(pid pidList, tree bool) cpuMeter {
	m := cpuMeter{pid: pid, tree: tree}
	if len(pid) > 0 {
		var err error
		m.start, err = readCPU(pid, tree)
		m.ok = err == nil
	}
	return m
}

// field returns " cpu=12.34s" with the CPU time used since start, or "".
func (m cpuMeter) field() string {
	if !m.ok {
		return ""
	}
	now, err := readCPU(m.pid, m.tree)
	if err != nil {
		return " cpu=error"
	}
	return " cpu=" + secs(now-m.start)
}

// rssValue is an optional memory reading for a summary line.
type rssValue string

// rssField reads the memory of pid for a summary; "" when there is no pid,
// "error" when it cannot be read.
func rssField(pid pidList, tree bool) rssValue {
	if len(pid) == 0 {
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
	var pid pidList
	fs.Var(&pid, "pid", "process `PID` (comma-separated PIDs are summed)")
	tree := fs.Bool("pid-tree", false, "sum the proportional set size (Pss) of the process and all its descendants")
	label := fs.String("label", "", "free text copied into the summary line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(pid) == 0 {
		fmt.Fprintln(stderr, "rss: -pid is required")
		return errUsage
	}
	rss, err := readRSS(pid, *tree)
	if err != nil {
		return fmt.Errorf("rss: %w", err)
	}
	procs := len(pid)
	if p, err := expand(pid, *tree); err == nil {
		procs = len(p)
	}
	fmt.Fprintf(stdout, "rss label=%s pid=%s procs=%d rss=%s at=%s\n", field(*label), pid.String(), procs, mib(rss), time.Now().UTC().Format(time.RFC3339))
	return nil
}
