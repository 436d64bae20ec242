package testkit

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer is a log sink that goroutines may write to while a test reads
// it. The zero value is ready to use.
type LogBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{} // capacity 1: "something was written since you last looked"
}

// Write appends p and wakes a WaitFor.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case l.signal() <- struct{}{}:
	default:
	}
	return l.buf.Write(p)
}

// signal returns the wake-up channel, making it on first use; l.mu is held.
func (l *LogBuffer) signal() chan struct{} {
	if l.wrote == nil {
		l.wrote = make(chan struct{}, 1)
	}
	return l.wrote
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Logger returns a text logger at debug level writing to l.
func (l *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// WaitFor waits, on writes rather than by polling, until the log contains
// text, failing t if it does not within timeout.
func (l *LogBuffer) WaitFor(t testing.TB, text string, timeout time.Duration) {
	t.Helper()
	l.mu.Lock()
	wrote := l.signal()
	l.mu.Unlock()
	deadline := time.After(timeout)
	for !strings.Contains(l.String(), text) {
		select {
		case <-wrote:
		case <-deadline:
			t.Fatalf("log has no %q after %s:\n%s", text, timeout, l.String())
		}
	}
}
