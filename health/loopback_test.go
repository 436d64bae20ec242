package health

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// backend is a testkit.Backend whose /health answers status (200 until
// changed), and which records the last probe's Host.
type backend struct {
	*testkit.Backend
	status   atomic.Int32
	lastHost atomic.Value
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	be := &backend{}
	be.status.Store(200)
	be.Backend = testkit.StartBackend(t, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/health":
			be.lastHost.Store(string(ctx.Host()))
			ctx.SetStatusCode(int(be.status.Load()))
		case "/redirect":
			ctx.Redirect("/elsewhere", fasthttp.StatusFound)
		default:
			ctx.SetStatusCode(fasthttp.StatusNotFound)
		}
	})
	return be
}

// eventPool reports every verdict change on events.
type eventPool struct {
	*balancer.Pool
	events chan healthEvent
}

type healthEvent struct {
	addr    string
	healthy bool
	at      time.Time
}

func (p *eventPool) Update(b *balancer.Backend, detail string, change func(*balancer.State)) bool {
	before := b.State().Health
	changed := p.Pool.Update(b, detail, change)
	if after := b.State().Health; after != before {
		p.events <- healthEvent{b.Address(), after == balancer.HealthHealthy, time.Now()}
	}
	return changed
}

func (p *eventPool) next(t *testing.T, addr string, healthy bool, within time.Duration) time.Time {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case e := <-p.events:
			if e.addr == addr && e.healthy == healthy {
				return e.at
			}
		case <-deadline:
			t.Fatalf("%s not healthy=%v within %s", addr, healthy, within)
		}
	}
}

func TestLoopbackProbeDrivenEligibility(t *testing.T) {
	a, b := startBackend(t), startBackend(t)
	const interval = 500 * time.Millisecond
	c := New(Options{
		Active: &ActiveOptions{Path: "/health", Host: "svc.internal", Interval: interval, Timeout: 250 * time.Millisecond, Rise: 2, Fall: 3},
		Logger: testLogger(),
	})
	p := balancer.NewPool(balancer.Options{NewGuard: c.NewGuard, Logger: testLogger()})
	defer p.Close()
	p.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: a.Addr}, {Address: b.Addr}})
	ep := &eventPool{Pool: p, events: make(chan healthEvent, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, ep) }()
	defer func() { cancel(); <-done }()

	ep.next(t, a.Addr, true, 2*time.Second)
	if h, _ := a.lastHost.Load().(string); h != "svc.internal" {
		t.Fatalf("probe Host %q, want svc.internal", h)
	}
	for round := range 2 {
		a.status.Store(503)
		flipped := time.Now()
		at := ep.next(t, a.Addr, false, 5*time.Second)
		if d := at.Sub(flipped); d > 3*interval+interval {
			t.Fatalf("round %d: ineligible after %s, want within fall x interval + interval = %s", round, d, 4*interval)
		}
		if s := p.Snapshot(); s.EligibleCount() != 1 || p.Pick(0, nil).Address() != b.Addr {
			t.Fatalf("round %d: a still picked", round)
		}
		a.status.Store(204)
		flipped = time.Now()
		at = ep.next(t, a.Addr, true, 5*time.Second)
		if d := at.Sub(flipped); d > 2*interval+interval {
			t.Fatalf("round %d: back after %s, want within rise x interval + interval = %s", round, d, 3*interval)
		}
		if p.Snapshot().EligibleCount() != 2 {
			t.Fatalf("round %d: a not eligible again", round)
		}
	}
}

func TestBuiltinProbe(t *testing.T) {
	be := startBackend(t)
	hung := testkit.StartRaw(t, testkit.Hung).Addr // accepts, never answers
	closedAddr := testkit.FreeAddr(t)

	probe := func(path, addr string, lo, hi int) error {
		o := (Options{Active: &ActiveOptions{Path: path, ExpectStatusMin: lo, ExpectStatusMax: hi, Timeout: 300 * time.Millisecond}}).withDefaults()
		ctx, cancel := context.WithTimeout(context.Background(), o.Active.Timeout)
		defer cancel()
		return newProber(o.Active).probe(ctx, addr)
	}
	for _, tc := range []struct {
		name, path, addr string
		lo, hi           int
		pass             bool
	}{
		{"http 200", "/health", be.Addr, 0, 0, true},
		{"http 302 not followed, passes 200-399", "/redirect", be.Addr, 0, 0, true},
		{"http 302 fails 200-299", "/redirect", be.Addr, 200, 299, false},
		{"http 404", "/nope", be.Addr, 0, 0, false},
		{"http refused", "/health", closedAddr, 0, 0, false},
		{"http hung times out", "/health", hung, 0, 0, false},
		{"tcp open", "", be.Addr, 0, 0, true},
		{"tcp refused", "", closedAddr, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := probe(tc.path, tc.addr, tc.lo, tc.hi)
			if (err == nil) != tc.pass {
				t.Fatalf("probe error %v, want pass=%v", err, tc.pass)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("probe took %s, timeout is 300ms", d)
			}
			if err != nil {
				t.Logf("%v", err)
			}
		})
	}
}
