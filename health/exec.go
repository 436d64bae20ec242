//go:build unix

package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// execProbe makes the script check of b (health.active.type exec): it runs
// a.Command directly, without a shell, in a new process group with a clean
// environment (PATH plus KELPIE_UPSTREAM, KELPIE_BACKEND_ADDRESS,
// KELPIE_BACKEND_HOST, KELPIE_BACKEND_PORT). Exit 0 passes; exit 1 is a
// warning (ErrCheckWarning: eligible, degraded); any other exit, a failure
// to start, or the timeout fails. The whole process group is killed when
// the check ends, so a timed-out script leaves no children behind, and the
// check is waited for, so it leaves no zombie. At most MaxExecChecks run at
// once per upstream; a check waiting for a slot counts against its timeout.
// The first 4 KiB of its output become b's check output.
func (c *Checker) execProbe(a *ActiveOptions, b *balancer.Backend) func(context.Context, string) error {
	return func(ctx context.Context, addr string) error {
		start := time.Now()
		select {
		case c.execSlots <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("exec check %s: no free slot within %s (%d checks at a time)", addr, a.Timeout, cap(c.execSlots))
		}
		defer func() { <-c.execSlots }()
		host, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command(a.Command[0], a.Command[1:]...)
		cmd.Env = []string{"PATH=" + ExecPath, "KELPIE_UPSTREAM=" + a.Upstream, "KELPIE_BACKEND_ADDRESS=" + addr,
			"KELPIE_BACKEND_HOST=" + host, "KELPIE_BACKEND_PORT=" + port}
		out := &capped{max: maxCheckOutput}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.WaitDelay = time.Second // a child holding the output open must not hang Wait
		if err := cmd.Start(); err != nil {
			b.SetCheckOutput("")
			return fmt.Errorf("exec check %s: %w", addr, err)
		}
		pgid := cmd.Process.Pid
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		var err error
		select {
		case err = <-waited:
			_ = syscall.Kill(-pgid, syscall.SIGKILL) // what the script left running
		case <-ctx.Done():
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-waited // reaped: no zombie
			b.SetCheckOutput(out.String())
			return fmt.Errorf("exec check %s: timeout after %s; process group killed", addr, time.Since(start).Round(time.Millisecond))
		}
		b.SetCheckOutput(out.String())
		var ee *exec.ExitError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ee) && ee.ExitCode() == 1:
			return fmt.Errorf("exec check %s: exit 1 (warning): %s: %w", addr, firstLine(out.String()), ErrCheckWarning)
		case errors.As(err, &ee):
			return fmt.Errorf("exec check %s: %s: %s", addr, ee, firstLine(out.String()))
		}
		return fmt.Errorf("exec check %s: %w", addr, err)
	}
}

// maxCheckOutput is how much of a check's output is kept.
const maxCheckOutput = 4 << 10

// capped keeps the first max bytes written to it and discards the rest.
// exec calls Write from one goroutine at a time (Stdout and Stderr are the
// same comparable writer).
type capped struct {
	max int
	b   []byte
}

func (w *capped) Write(p []byte) (int, error) {
	if room := w.max - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (w *capped) String() string { return string(w.b) }

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if s == "" {
		return "no output"
	}
	return s
}
