//go:build unix

package health

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "check.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExecCheck runs real script checks: exit codes map to pass, warning
// and failure; the environment is clean with the KELPIE_ variables; output
// is capped at 4 KiB; a timed-out check is killed with its process group
// (its background child too) and reaped.
func TestExecCheck(t *testing.T) {
	p := balancer.NewPool(balancer.Options{Name: "web"})
	p.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "127.0.0.1:9001"}})
	t.Cleanup(p.Close)
	b := p.Snapshot().Members[0]
	c := New(Options{})
	t.Setenv("KELPIE_SECRET_FROM_PARENT", "leak")
	run := func(body string, timeout time.Duration) error {
		a := &ActiveOptions{Command: []string{script(t, body), "arg1"}, Upstream: "web", Timeout: timeout}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return c.execProbe(a, b)(ctx, b.Address())
	}

	if err := run(`echo "$KELPIE_UPSTREAM $KELPIE_BACKEND_ADDRESS $KELPIE_BACKEND_HOST $KELPIE_BACKEND_PORT $1 [$KELPIE_SECRET_FROM_PARENT]"`, 5*time.Second); err != nil {
		t.Fatalf("exit 0: %v", err)
	}
	if got := b.CheckOutput(); got != "web 127.0.0.1:9001 127.0.0.1 9001 arg1 []\n" {
		t.Fatalf("output %q", got)
	}
	if err := run("echo replica lag 30s; exit 1", 5*time.Second); !errors.Is(err, ErrCheckWarning) || !strings.Contains(err.Error(), "replica lag 30s") {
		t.Fatalf("exit 1: %v, want a warning naming the output", err)
	}
	if err := run("echo down >&2; exit 2", 5*time.Second); err == nil || errors.Is(err, ErrCheckWarning) || !strings.Contains(err.Error(), "exit status 2: down") {
		t.Fatalf("exit 2: %v", err)
	}
	if err := run("head -c 10000 /dev/zero | tr '\\0' x", 5*time.Second); err != nil || len(b.CheckOutput()) != 4096 {
		t.Fatalf("big output: %v, kept %d bytes", err, len(b.CheckOutput()))
	}

	pidFile := filepath.Join(t.TempDir(), "child.pid")
	start := time.Now()
	err := run("sleep 30 & echo $! > "+pidFile+"; sleep 30", 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timeout after") || time.Since(start) > 3*time.Second {
		t.Fatalf("timeout: %v after %s", err, time.Since(start))
	}
	raw, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	deadline := time.Now().Add(5 * time.Second)
	for !gone(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the timed-out check's child %d is still alive", child)
		}
		time.Sleep(20 * time.Millisecond) // the kernel and init reap it; no event to wait on
	}

	if err := run("exit 0", time.Second); err != nil {
		t.Fatal(err)
	}
	a := &ActiveOptions{Command: []string{"/nonexistent/check"}, Timeout: time.Second}
	if err := c.execProbe(a, b)(context.Background(), b.Address()); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing program: %v", err)
	}
}

// gone reports whether pid no longer exists (or is a zombie: killed,
// waiting to be reaped by its new parent).
func gone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err != nil || strings.Contains(string(stat), ") Z ")
}
