package proc

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestFamilyCounted: a child's memory and CPU count toward its parent's
// (nginx's workers toward the master's pid), beyond the parent's own.
func TestFamilyCounted(t *testing.T) {
	self := os.Getpid()
	child := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }() // by PID: the child this test started
	// The child spins for part of this.
	time.Sleep(1500 * time.Millisecond)
	own := strconv.Itoa(self)
	all := RSSKB(self)
	if alone := rss(own); all < alone+256 || alone <= 0 { // the shell's own RSS is over a MiB
		t.Errorf("RSS with the child %d KiB, the test process alone %d KiB", all, alone)
	}
	if all, alone := CPUTicks(self), ticks(own); all < alone+5 { // 50 ms
		t.Errorf("CPU ticks with the child %d, alone %d: the child's spin is missing", all, alone)
	}
	if CPUTicks(0) != 0 {
		t.Error("CPUTicks(0) is not 0")
	}
}
