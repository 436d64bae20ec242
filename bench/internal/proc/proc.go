// Package proc reads benchmarked processes' CPU time and memory from /proc:
// for one process and its direct children (nginx's workers: CPUTicks,
// RSSKB), or for a list of PIDs the load generators are given (CPUSeconds).
package proc

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TicksPerSecond is USER_HZ, the unit of CPUTicks.
const TicksPerSecond = 100

// CPUTicks is utime+stime of pid and its direct children, in clock ticks;
// 0 for pid 0.
func CPUTicks(pid int) int64 {
	if pid == 0 {
		return 0
	}
	var total int64
	for _, p := range family(pid) {
		total += ticks(p)
	}
	return total
}

// RSSKB is the resident set of pid and its direct children, in KiB.
func RSSKB(pid int) int64 {
	var total int64
	for _, p := range family(pid) {
		total += rss(p)
	}
	return total
}

func rss(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// family is pid and the pids whose parent it is.
func family(pid int) []string {
	self := strconv.Itoa(pid)
	out := []string{self}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		f, err := os.Open(s)
		if err != nil {
			continue
		}
		line, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		fields := strings.Fields(line[strings.LastIndexByte(line, ')')+1:])
		if len(fields) > 1 && fields[1] == self {
			out = append(out, filepath.Base(filepath.Dir(s)))
		}
	}
	return out
}

func ticks(pid string) int64 {
	t, _ := statTicks(pid)
	return t
}

// statTicks is utime+stime of one process, in clock ticks.
func statTicks(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after ")" are
	// fixed: f[0] is field 3 (state), utime and stime are fields 14 and 15.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: %d fields after the name", pid, len(fields))
	}
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	k, _ := strconv.ParseInt(fields[12], 10, 64)
	return u + k, nil
}

// ParsePIDs parses a comma-separated list of PIDs ("" is none).
func ParsePIDs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bad pid %q", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// CPUSeconds sums utime+stime of the given processes (not their children);
// a process that does not exist is an error, not zero.
func CPUSeconds(pids []int) (float64, error) {
	var total int64
	for _, pid := range pids {
		t, err := statTicks(strconv.Itoa(pid))
		if err != nil {
			return 0, err
		}
		total += t
	}
	return float64(total) / TicksPerSecond, nil
}
