package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const runM = "../../runs/2026-11-23/M.raw.txt"

func TestMedianCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		// HAProxy's closed-loop req/s in run M: 26552.8, 26982.2, 27735.9, 19559.2, 27398.1.
		{[]string{"median", "-load", "closed", "-target", "haproxy", "-key", "rps", runM}, "26982.2\n"},
		{[]string{"median", "-load", "closed", "-target", "direct", "-key", "cpu_us_req", runM}, "-\n"},
	} {
		var out bytes.Buffer
		if err := run(c.args, &out); err != nil || out.String() != c.want {
			t.Errorf("%v: %q, %v; want %q", c.args, out.String(), err, c.want)
		}
	}
}

func TestReportAndPoolCommands(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-gen-cpu", "0", "-conns", "50", runM}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "## Side-by-side benchmark\n\n### kelpie against its targets\n\n**Targets:**") {
		t.Errorf("report starts:\n%.300s", out.String())
	}
	out.Reset()
	if err := run([]string{"pool", runM, runM}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "| kelpie | 10 | 4 |") {
		t.Errorf("pool of M twice:\n%s", out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"pool"}, {"median"}, {"a", "b"}} {
		if err := run(args, &bytes.Buffer{}); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want the usage", args, err)
		}
	}
	if err := run([]string{"/nonexistent.raw.txt"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("missing file: %v", err)
	}
}
