package discovery

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/balancer"
)

func stepWatch(t *testing.T, spec WatchSpec, o ConsulOptions) (*watch, *recSink) {
	t.Helper()
	o.setDefaults()
	w := newWatch(spec.normalized(), &o, nil, slog.New(slog.DiscardHandler))
	s := newRecSink()
	w.addSink(s)
	return w, s
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestStepIndexRules(t *testing.T) {
	w, s := stepWatch(t, WatchSpec{Service: "web"}, ConsulOptions{})
	a := entry("10.0.0.1", "n1", 80, 1)
	b := entry("10.0.0.2", "n2", 80, 1)

	if q := w.query(t0); q.WaitIndex != 0 {
		t.Fatalf("first query WaitIndex = %d, want 0", q.WaitIndex)
	}
	w.step(t0, t0, []*api.ServiceEntry{a}, &api.QueryMeta{LastIndex: 5}, nil)
	if got := w.query(t0).WaitIndex; got != 5 {
		t.Fatalf("WaitIndex after index 5 = %d", got)
	}
	if s.count() != 1 {
		t.Fatalf("first sync published %d updates, want 1", s.count())
	}

	// Same index, same content: a blocking-query timeout. Nothing published.
	w.step(t0, t0, []*api.ServiceEntry{a}, &api.QueryMeta{LastIndex: 5}, nil)
	if s.count() != 1 {
		t.Fatalf("unchanged result published (updates=%d)", s.count())
	}
	// Same index, other content: a return is no guarantee either way; diff.
	w.step(t0, t0, []*api.ServiceEntry{a, b}, &api.QueryMeta{LastIndex: 5}, nil)
	if s.count() != 2 || len(s.last()) != 2 {
		t.Fatalf("changed content at same index not published: %v", s.last())
	}

	// Index goes backwards (agent restart): reset to 0, data still applied.
	w.step(t0, t0, []*api.ServiceEntry{b}, &api.QueryMeta{LastIndex: 3}, nil)
	if got := w.query(t0).WaitIndex; got != 0 {
		t.Fatalf("WaitIndex after going backwards = %d, want 0", got)
	}
	if got := addrs(s.last()); !slices.Equal(got, []string{"10.0.0.2:80"}) {
		t.Fatalf("members after reset = %v", got)
	}

	// Index 0 from the server: never block on 0 (busy loop); use 1.
	w.step(t0, t0, []*api.ServiceEntry{b}, &api.QueryMeta{LastIndex: 0}, nil)
	if got := w.query(t0).WaitIndex; got != 1 {
		t.Fatalf("WaitIndex after index 0 = %d, want 1", got)
	}
	w.step(t0, t0, []*api.ServiceEntry{b}, nil, nil)
	if got := w.query(t0).WaitIndex; got != 1 {
		t.Fatalf("WaitIndex after missing meta = %d, want 1", got)
	}
	w.step(t0, t0, []*api.ServiceEntry{b}, &api.QueryMeta{LastIndex: 9}, nil)
	if got := w.query(t0).WaitIndex; got != 9 {
		t.Fatalf("WaitIndex after 9 = %d", got)
	}
}

func TestStepPacing(t *testing.T) {
	w, _ := stepWatch(t, WatchSpec{Service: "web"}, ConsulOptions{})
	if d := w.step(t0, t0.Add(10*time.Millisecond), nil, &api.QueryMeta{LastIndex: 2}, nil); d != 90*time.Millisecond {
		t.Fatalf("fast return: next query in %v, want 90ms (MinInterval 100ms)", d)
	}
	if d := w.step(t0, t0.Add(time.Minute), nil, &api.QueryMeta{LastIndex: 3}, nil); d != 0 {
		t.Fatalf("slow return: next query in %v, want 0", d)
	}
}

func TestStepErrorsKeepMembersAndBackOff(t *testing.T) {
	o := ConsulOptions{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second, Token: "s3cr3t-token"}
	w, s := stepWatch(t, WatchSpec{Service: "web"}, o)
	w.step(t0, t0, []*api.ServiceEntry{entry("10.0.0.1", "n1", 80, 1)}, &api.QueryMeta{LastIndex: 7}, nil)

	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, max := range want {
		max *= time.Millisecond
		d := w.step(t0, t0, nil, nil, errors.New(`Get "http://x/v1/health/service/web?token=s3cr3t-token": connection refused`))
		if d < max/2 || d > max {
			t.Fatalf("failure %d: backoff %v, want in [%v, %v]", i+1, d, max/2, max)
		}
	}
	st := w.status()
	if st.Failures != len(want) || st.LastError == "" || st.Index != 0 {
		t.Fatalf("status after errors = %+v", st)
	}
	if strings.Contains(st.LastError, "s3cr3t-token") {
		t.Fatalf("token in LastError: %q", st.LastError)
	}
	if s.count() != 1 || len(s.last()) != 1 {
		t.Fatalf("errors changed the members: %v", s.updates)
	}

	// Recovery: failures reset, same content not republished.
	w.step(t0, t0, []*api.ServiceEntry{entry("10.0.0.1", "n1", 80, 1)}, &api.QueryMeta{LastIndex: 8}, nil)
	if st := w.status(); st.Failures != 0 || st.LastError != "" || st.Index != 8 {
		t.Fatalf("status after recovery = %+v", st)
	}
	if s.count() != 1 {
		t.Fatalf("recovery republished unchanged members")
	}
}

func TestStepEmptyGrace(t *testing.T) {
	w, s := stepWatch(t, WatchSpec{Service: "web"}, ConsulOptions{EmptyGrace: 30 * time.Second, WaitTime: time.Minute})
	a := entry("10.0.0.1", "n1", 80, 1)
	w.step(t0, t0, []*api.ServiceEntry{a}, &api.QueryMeta{LastIndex: 2}, nil)

	// Empty: kept, and the next query waits only until the grace ends.
	w.step(t0, t0.Add(time.Second), nil, &api.QueryMeta{LastIndex: 3}, nil)
	if s.count() != 1 {
		t.Fatalf("empty list applied before grace")
	}
	if q := w.query(t0.Add(11 * time.Second)); q.WaitTime != 20*time.Second {
		t.Fatalf("WaitTime during grace = %v, want 20s", q.WaitTime)
	}
	// Instances come back within grace: grace clock resets, nothing dropped.
	w.step(t0, t0.Add(5*time.Second), []*api.ServiceEntry{a}, &api.QueryMeta{LastIndex: 4}, nil)
	if st := w.status(); !st.EmptySince.IsZero() || s.count() != 1 {
		t.Fatalf("after instances came back: %+v, updates %d", st, s.count())
	}
	if q := w.query(t0.Add(6 * time.Second)); q.WaitTime != time.Minute {
		t.Fatalf("WaitTime after grace cleared = %v", q.WaitTime)
	}

	// Empty for the whole grace: applied.
	w.step(t0, t0.Add(10*time.Second), nil, &api.QueryMeta{LastIndex: 5}, nil)
	w.step(t0, t0.Add(39*time.Second), nil, &api.QueryMeta{LastIndex: 5}, nil)
	if s.count() != 1 {
		t.Fatalf("empty applied before 30s grace")
	}
	w.step(t0, t0.Add(40*time.Second), nil, &api.QueryMeta{LastIndex: 5}, nil)
	if s.count() != 2 || len(s.last()) != 0 {
		t.Fatalf("empty not applied after grace: %v", s.updates)
	}
	if !w.status().EmptySince.IsZero() {
		t.Fatal("grace clock left running")
	}
}

func TestStepEmptyAtFirstSyncAndNoGrace(t *testing.T) {
	w, s := stepWatch(t, WatchSpec{Service: "web"}, ConsulOptions{})
	w.step(t0, t0, nil, &api.QueryMeta{LastIndex: 2}, nil)
	if s.count() != 1 || len(s.last()) != 0 || !w.status().Synced {
		t.Fatalf("first empty sync: updates %v synced %v", s.updates, w.status().Synced)
	}

	w, s = stepWatch(t, WatchSpec{Service: "web"}, ConsulOptions{EmptyGrace: -1})
	w.step(t0, t0, []*api.ServiceEntry{entry("10.0.0.1", "n1", 80, 1)}, &api.QueryMeta{LastIndex: 2}, nil)
	w.step(t0, t0, nil, &api.QueryMeta{LastIndex: 3}, nil)
	if s.count() != 2 || len(s.last()) != 0 {
		t.Fatalf("EmptyGrace<0 did not apply empty at once: %v", s.updates)
	}
}

func TestMembersFromEntries(t *testing.T) {
	w, _ := stepWatch(t, WatchSpec{Service: "web"}, ConsulOptions{})
	es := []*api.ServiceEntry{
		entry("10.0.0.2", "192.168.0.1", 8080, 5),
		entry("", "192.168.0.9", 9000, 0),         // no service address: node's; weight 0 -> 1
		entry("fd00::1", "n", 443, 2),             // IPv6 gets brackets
		entry("10.0.0.2", "192.168.0.2", 8080, 7), // duplicate address: highest weight
		entry("10.0.0.3", "n", 0, 1),              // no port: skipped
		{Service: nil},
	}
	got := w.members(es)
	want := []balancer.Member{
		{Address: "10.0.0.2:8080", Weight: 7},
		{Address: "192.168.0.9:9000", Weight: 1},
		{Address: "[fd00::1]:443", Weight: 2},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("members = %v, want %v", got, want)
	}
}

func TestMembersWarning(t *testing.T) {
	es := []*api.ServiceEntry{
		entry("10.0.0.1", "n", 80, 10, api.HealthPassing, api.HealthPassing),
		entry("10.0.0.2", "n", 80, 10, api.HealthPassing, api.HealthWarning),
		entry("10.0.0.3", "n", 80, 10, api.HealthWarning, api.HealthCritical),
		entry("10.0.0.4", "n", 80, 10, api.HealthPassing, api.HealthCritical),
	}
	es[3].Checks[1].CheckID = api.NodeMaint // maintenance mode
	es[1].Service.Weights.Warning = 4

	w, _ := stepWatch(t, WatchSpec{Service: "web", IncludeWarning: true}, ConsulOptions{})
	want := []balancer.Member{{Address: "10.0.0.1:80", Weight: 10}, {Address: "10.0.0.2:80", Weight: 4}}
	if got := w.members(es); !slices.Equal(got, want) {
		t.Fatalf("warning included: %v, want %v", got, want)
	}
	w, _ = stepWatch(t, WatchSpec{Service: "web", IncludeWarning: true, WarningWeightPercent: 50}, ConsulOptions{})
	want[1].Weight = 2
	if got := w.members(es); !slices.Equal(got, want) {
		t.Fatalf("warning at 50%%: %v, want %v", got, want)
	}
	w, _ = stepWatch(t, WatchSpec{Service: "web", IncludeWarning: true, WarningWeightPercent: 10}, ConsulOptions{})
	want[1].Weight = 1 // never below 1
	if got := w.members(es); !slices.Equal(got, want) {
		t.Fatalf("warning at 10%%: %v, want %v", got, want)
	}
}

func TestQueryOptions(t *testing.T) {
	w, _ := stepWatch(t, WatchSpec{Service: "web", Tag: `v"1`, Datacenter: "dc2"}, ConsulOptions{})
	q := w.query(t0)
	if !q.AllowStale || q.RequireConsistent || q.Datacenter != "dc2" || q.WaitTime != DefaultWaitTime {
		t.Fatalf("query = %+v", q)
	}
	if q.Filter != `"v\"1" in Service.Tags` {
		t.Fatalf("filter = %s", q.Filter)
	}
	w, _ = stepWatch(t, WatchSpec{Service: "web"}, ConsulOptions{RequireConsistent: true, WaitTime: 5 * time.Second})
	q = w.query(t0)
	if q.AllowStale || !q.RequireConsistent || q.Filter != "" || q.WaitTime != 5*time.Second {
		t.Fatalf("consistent query = %+v", q)
	}
}
