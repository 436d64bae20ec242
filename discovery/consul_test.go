package discovery

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

var errRefused = errors.New("dial tcp 127.0.0.1:1: connect: connection refused")

func TestLoopSyncBlockAndPace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeHealth()
		c := testConsul(t, f, ConsulOptions{})
		s := newRecSink()
		if err := c.Watch(WatchSpec{Service: "web", Tag: "v1"}, s); err != nil {
			t.Fatal(err)
		}
		if c.Synced() {
			t.Fatal("Synced before the first query")
		}
		runConsul(t, c)

		call := f.next(t)
		if call.service != "web" || call.tag != "" || !call.passing || call.q.WaitIndex != 0 || !call.q.AllowStale ||
			call.q.Filter != `"v1" in Service.Tags` {
			t.Fatalf("first call = %+v q=%+v", call, call.q)
		}
		call.ok(10, entry("10.0.0.1", "n", 80, 1))
		if got := addrs(<-s.ch); !slices.Equal(got, []string{"10.0.0.1:80"}) {
			t.Fatalf("members = %v", got)
		}
		if s.srcs[0] != balancer.SourceConsul {
			t.Fatalf("source = %v", s.srcs[0])
		}
		if !c.Synced() {
			t.Fatal("not Synced after the first sync")
		}

		// Returned at once: the next query waits out MinInterval, then
		// blocks on the index it got.
		start := time.Now()
		call = f.next(t)
		if d := time.Since(start); d != DefaultMinInterval {
			t.Fatalf("next query after %v, want %v", d, DefaultMinInterval)
		}
		if call.q.WaitIndex != 10 || call.q.WaitTime != DefaultWaitTime {
			t.Fatalf("blocking query: index %d wait %v", call.q.WaitIndex, call.q.WaitTime)
		}
		// A flapping service cannot make the loop spin: >= 100ms apart.
		for i := range 5 {
			start = time.Now()
			call.ok(uint64(11+i), entry("10.0.0.1", "n", 80, 1+i%2))
			call = f.next(t)
			if d := time.Since(start); d < DefaultMinInterval {
				t.Fatalf("queries %v apart under churn", d)
			}
		}
		call.ok(20, entry("10.0.0.1", "n", 80, 1))
		f.next(t)
	})
}

func TestLoopErrorsThenRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeHealth()
		var logs testkit.LogBuffer
		c := testConsul(t, f, ConsulOptions{
			Token:      "canary-token-123",
			BackoffMin: 100 * time.Millisecond, BackoffMax: 800 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		s := newRecSink()
		c.Watch(WatchSpec{Service: "web"}, s)
		runConsul(t, c)

		f.next(t).ok(3, entry("10.0.0.1", "n", 80, 1))
		<-s.ch
		call := f.next(t)
		caps := []time.Duration{100, 200, 400, 800, 800}
		for i, cp := range caps {
			cp *= time.Millisecond
			call.fail(errors.New(errRefused.Error() + " token=canary-token-123"))
			start := time.Now()
			call = f.next(t)
			d := time.Since(start)
			if d < cp/2 || d > cp {
				t.Fatalf("retry %d after %v, want in [%v, %v]", i+1, d, cp/2, cp)
			}
			if call.q.WaitIndex != 0 {
				t.Fatalf("retry blocks on index %d, want a non-blocking re-read", call.q.WaitIndex)
			}
		}
		st := c.Status()[0]
		if st.Failures != len(caps) || st.LastError == "" || strings.Contains(st.LastError, "canary-token-123") {
			t.Fatalf("status while failing = %+v", st)
		}
		if s.count() != 1 {
			t.Fatalf("errors touched the members")
		}
		// Agent back after a restart (lower index), with a new instance.
		call.ok(2, entry("10.0.0.2", "n", 80, 1))
		if got := addrs(<-s.ch); !slices.Equal(got, []string{"10.0.0.2:80"}) {
			t.Fatalf("after recovery: %v", got)
		}
		if call = f.next(t); call.q.WaitIndex != 2 {
			t.Fatalf("then WaitIndex = %d, want 2", call.q.WaitIndex)
		}
		if st := c.Status()[0]; st.Failures != 0 || st.LastError != "" {
			t.Fatalf("status after recovery = %+v", st)
		}
		if strings.Contains(logs.String(), "canary-token-123") {
			t.Fatalf("token in logs:\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), "consul watch failing") || !strings.Contains(logs.String(), "recovered") {
			t.Fatalf("transitions not logged:\n%s", logs.String())
		}
	})
}

func TestLoopEmptyGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeHealth()
		c := testConsul(t, f, ConsulOptions{EmptyGrace: 30 * time.Second})
		s := newRecSink()
		c.Watch(WatchSpec{Service: "web"}, s)
		runConsul(t, c)

		f.next(t).ok(3, entry("10.0.0.1", "n", 80, 1))
		<-s.ch
		f.next(t).ok(4) // empty
		emptyAt := time.Now()
		// The blocking query comes back by itself when the grace ends, even
		// though Consul has nothing new to say.
		call := f.next(t)
		if call.q.WaitTime > 30*time.Second {
			t.Fatalf("WaitTime during grace = %v", call.q.WaitTime)
		}
		synctest.Wait()
		if s.count() != 1 {
			t.Fatal("empty list applied during grace")
		}
		time.Sleep(call.q.WaitTime) // fake clock: the server's wait elapses
		call.ok(4)
		got := <-s.ch
		if len(got) != 0 || time.Since(emptyAt) < 30*time.Second {
			t.Fatalf("after %v members %v", time.Since(emptyAt), got)
		}
	})
}

func TestLoopHungCallCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeHealth()
		c := testConsul(t, f, ConsulOptions{WaitTime: 16 * time.Second})
		s := newRecSink()
		c.Watch(WatchSpec{Service: "web"}, s)
		cancel := runConsul(t, c)

		f.next(t).ok(3, entry("10.0.0.1", "n", 80, 1))
		<-s.ch
		// The agent hangs: no reply. The call's own deadline ends it.
		call := f.next(t)
		start := time.Now()
		<-call.q.Context().Done()
		if d := time.Since(start); d != 16*time.Second+time.Second+callSlack {
			t.Fatalf("hung call cancelled after %v", d)
		}
		synctest.Wait()
		if st := c.Status()[0]; st.Failures != 1 || !strings.Contains(st.LastError, "deadline") {
			t.Fatalf("status after hung call = %+v", st)
		}
		if s.count() != 1 {
			t.Fatal("hung call touched members")
		}
		// Hung again; shutting down cancels it at once.
		call = f.next(t)
		start = time.Now()
		cancel()
		<-call.q.Context().Done()
		if time.Since(start) != 0 {
			t.Fatal("Run's cancel did not cancel the hung call at once")
		}
	})
}

func TestSharedWatchFanOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeHealth()
		c := testConsul(t, f, ConsulOptions{})
		s1, s2, s3, other := newRecSink(), newRecSink(), newRecSink(), newRecSink()
		c.Watch(WatchSpec{Service: "web"}, s1)
		c.Watch(WatchSpec{Service: "web", WarningWeightPercent: 40}, s2) // same query once normalized
		c.Watch(WatchSpec{Service: "web", Tag: "v2"}, other)
		runConsul(t, c)

		calls := map[string]*fakeCall{}
		for range 2 {
			call := f.next(t)
			calls[call.q.Filter] = call
		}
		if len(calls) != 2 || len(c.Status()) != 2 {
			t.Fatalf("want 2 watches for 3 sinks, got calls %d status %d", len(calls), len(c.Status()))
		}
		calls[""].ok(5, entry("10.0.0.1", "n", 80, 1))
		if got, got2 := <-s1.ch, <-s2.ch; len(got) != 1 || len(got2) != 1 {
			t.Fatalf("fan-out: %v %v", got, got2)
		}
		// A sink joining a synced watch gets its members at once.
		c.Watch(WatchSpec{Service: "web"}, s3)
		if s3.count() != 1 || len(s3.last()) != 1 {
			t.Fatalf("late sink got %v", s3.updates)
		}
		if st, _ := c.SinkStatus(s3); st.Sinks != 3 {
			t.Fatalf("sinks on shared watch = %d", st.Sinks)
		}
		// Unwatch clears that sink's Consul members only.
		c.Unwatch(s1)
		if s1.count() != 2 || len(s1.last()) != 0 {
			t.Fatalf("unwatched sink: %v", s1.updates)
		}
		// Moving sinks away stops the watch and cancels its blocking query.
		next := f.next(t) // web's blocking query
		if next.q.Filter != "" {
			next.ok(0)
			t.Fatalf("unexpected call %q", next.q.Filter)
		}
		c.Watch(WatchSpec{Service: "web", Tag: "v2"}, s2)
		c.Unwatch(s3)
		<-next.q.Context().Done()
		if len(c.Status()) != 1 || c.Synced() {
			t.Fatalf("after moving sinks: %+v synced=%v", c.Status(), c.Synced())
		}
		calls["\"v2\" in Service.Tags"].ok(6, entry("10.0.0.9", "n", 80, 1))
		for _, s := range []*recSink{other, s2} {
			<-s.ch
			if got := addrs(s.last()); !slices.Equal(got, []string{"10.0.0.9:80"}) {
				t.Fatalf("v2 sink got %v", got)
			}
		}
		if !c.Synced() {
			t.Fatal("not Synced with the one remaining watch synced")
		}
		if err := c.Watch(WatchSpec{}, s1); !errors.Is(err, ErrNoService) {
			t.Fatalf("Watch without service: %v", err)
		}
	})
}

func TestRunTwiceAndEmpty(t *testing.T) {
	c := testConsul(t, newFakeHealth(), ConsulOptions{})
	if !c.Synced() {
		t.Fatal("no watches should count as synced")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Run(ctx); err == nil {
		t.Fatal("second Run did not fail")
	}
}

// TestTokenNotInErrors runs a real client against a closed port: the
// transport error quotes the URL, never the token.
func TestTokenNotInErrors(t *testing.T) {
	addr := testkit.FreeAddr(t)
	var logs testkit.LogBuffer
	const token = "canary-5f3a9b"
	c, err := NewConsul(ConsulOptions{Address: addr, Token: token, BackoffMin: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	s := newRecSink()
	c.Watch(WatchSpec{Service: "web"}, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	logs.WaitFor(t, "consul watch failing", 10*time.Second)
	cancel()
	<-done
	st := c.Status()[0]
	if !strings.Contains(st.LastError, addr) {
		t.Fatalf("LastError should name the agent: %q", st.LastError)
	}
	if strings.Contains(st.LastError, token) || strings.Contains(logs.String(), token) {
		t.Fatalf("token leaked: %q\n%s", st.LastError, logs.String())
	}
}

func TestStatic(t *testing.T) {
	s := newRecSink()
	Static(s, []balancer.Member{{Address: "10.0.0.1:80"}})
	if s.srcs[0] != balancer.SourceStatic || len(s.last()) != 1 {
		t.Fatalf("Static: %v %v", s.srcs, s.updates)
	}
	// The pool is a Sink: members from both sources merge.
	p := balancer.NewPool(balancer.Options{Name: "web"})
	defer p.Close()
	Static(p, []balancer.Member{{Address: "10.0.0.1:80"}})
	p.SetMembers(balancer.SourceConsul, []balancer.Member{{Address: "10.0.0.2:80"}})
	if n := len(p.Snapshot().Members); n != 2 {
		t.Fatalf("pool members = %d", n)
	}
}

var _ HealthAPI = (*fakeHealth)(nil)
