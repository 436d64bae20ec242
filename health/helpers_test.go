package health

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// fakeProbe scripts probe results per address: each address passes unless
// set failing. It records when each address was probed.
type fakeProbe struct {
	mu    sync.Mutex
	fail  map[string]bool
	times map[string][]time.Time
}

func newFakeProbe() *fakeProbe {
	return &fakeProbe{fail: map[string]bool{}, times: map[string][]time.Time{}}
}

func (f *fakeProbe) probe(_ context.Context, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.times[addr] = append(f.times[addr], time.Now())
	if f.fail[addr] {
		return fmt.Errorf("probe %s: scripted failure", addr)
	}
	return nil
}

func (f *fakeProbe) set(addr string, failing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[addr] = failing
}

func (f *fakeProbe) count(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.times[addr])
}

func (f *fakeProbe) probedAt(addr string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times[addr]...)
}

// testLogger logs to stderr with -v, else nowhere.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// rig is a pool with a checker running on it.
type rig struct {
	t      *testing.T
	pool   *balancer.Pool
	c      *Checker
	cancel context.CancelFunc
	done   chan error
}

// startRig builds a pool of addrs (a "+" suffix makes a backup) guarded by
// a checker with opts, and runs the checker until the test ends. Call it
// inside a synctest bubble unless the probes are real.
func startRig(t *testing.T, opts Options, popts balancer.Options, addrs ...string) *rig {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	c := New(opts)
	popts.NewGuard = c.NewGuard
	if popts.Logger == nil {
		popts.Logger = opts.Logger
	}
	p := balancer.NewPool(popts)
	var ms []balancer.Member
	for _, a := range addrs {
		m := balancer.Member{Address: a}
		if a[len(a)-1] == '+' {
			m.Address, m.Backup = a[:len(a)-1], true
		}
		ms = append(ms, m)
	}
	p.SetMembers(balancer.SourceStatic, ms)
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, pool: p, c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx, p) }()
	t.Cleanup(r.stop)
	return r
}

func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		r.t.Errorf("Run returned %v", err)
	}
	r.cancel = nil
	r.pool.Close()
}

func (r *rig) b(addr string) *balancer.Backend {
	r.t.Helper()
	b := r.pool.Lookup(addr)
	if b == nil {
		r.t.Fatalf("no backend %s", addr)
	}
	return b
}

// eligible reports whether addr may be picked now.
func (r *rig) eligible(addr string) bool {
	s := r.pool.Snapshot()
	for i, m := range s.Members {
		if m.Address() == addr {
			return s.Eligible(i)
		}
	}
	return false
}

// result reports one finished attempt on addr through its guard; it fails
// the test if the guard refuses.
func (r *rig) result(addr string, res balancer.Result) {
	r.t.Helper()
	done, err := r.b(addr).Admit()
	if err != nil {
		r.t.Fatalf("%s: Admit: %v", addr, err)
	}
	done(res)
}

func (r *rig) results(addr string, res balancer.Result, n int) {
	r.t.Helper()
	for range n {
		r.result(addr, res)
	}
}
