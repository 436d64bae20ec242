package proc

import (
	"os"
	"slices"
	"testing"
)

func TestParsePIDs(t *testing.T) {
	got, err := ParsePIDs(" 12, 7,,3 ")
	if err != nil || !slices.Equal(got, []int{12, 7, 3}) {
		t.Errorf("ParsePIDs = %v, %v; want [12 7 3]", got, err)
	}
	if got, err := ParsePIDs(""); err != nil || len(got) != 0 {
		t.Errorf("empty list: %v, %v", got, err)
	}
	if _, err := ParsePIDs("12,x"); err == nil {
		t.Error("a bad pid parsed")
	}
}

// The test's own CPU time grows while it spins, and a process that does not
// exist is an error, not zero.
func TestCPUSeconds(t *testing.T) {
	me := []int{os.Getpid()}
	t0, err := CPUSeconds(me)
	if err != nil {
		t.Fatal(err)
	}
	for x := 0; ; x++ {
		t1, err := CPUSeconds(me)
		if err != nil {
			t.Fatal(err)
		}
		if t1 > t0 {
			break
		}
	}
	if _, err := CPUSeconds([]int{1 << 30}); err == nil {
		t.Error("CPUSeconds of a missing pid: no error")
	}
}
