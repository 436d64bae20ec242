// Package proc reads a benchmarked proxy's CPU time and memory from /proc,
// for the process and its direct children (nginx's workers).
package proc

import (
	"bufio"
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
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	k, _ := strconv.ParseInt(fields[12], 10, 64)
	return u + k
}
