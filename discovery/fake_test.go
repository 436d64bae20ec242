package discovery

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/balancer"
)

// fakeHealth is a scripted HealthAPI: every call is handed to the test on
// calls, and blocks until the test replies or the call's context ends.
type fakeHealth struct {
	calls chan *fakeCall
}

type fakeCall struct {
	service string
	tag     string
	passing bool
	q       *api.QueryOptions
	reply   chan fakeResult
}

type fakeResult struct {
	es  []*api.ServiceEntry
	idx uint64
	err error
}

func newFakeHealth() *fakeHealth { return &fakeHealth{calls: make(chan *fakeCall)} }

func (f *fakeHealth) Service(service, tag string, passing bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	c := &fakeCall{service: service, tag: tag, passing: passing, q: q, reply: make(chan fakeResult, 1)}
	ctx := q.Context()
	select {
	case f.calls <- c:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	select {
	case r := <-c.reply:
		if r.err != nil {
			return nil, nil, r.err
		}
		return r.es, &api.QueryMeta{LastIndex: r.idx}, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// next waits for the watch's next call.
func (f *fakeHealth) next(t *testing.T) *fakeCall {
	t.Helper()
	return <-f.calls
}

func (c *fakeCall) ok(idx uint64, es ...*api.ServiceEntry) { c.reply <- fakeResult{es: es, idx: idx} }
func (c *fakeCall) fail(err error)                         { c.reply <- fakeResult{err: err} }

// entry is one instance: service address (may be empty), node address,
// port, passing weight, and the statuses of its checks.
func entry(svcAddr, nodeAddr string, port, weight int, statuses ...string) *api.ServiceEntry {
	e := &api.ServiceEntry{
		Node:    &api.Node{Node: "n-" + nodeAddr, Address: nodeAddr},
		Service: &api.AgentService{ID: svcAddr, Service: "web", Address: svcAddr, Port: port, Weights: api.AgentWeights{Passing: weight, Warning: 1}},
	}
	for i, s := range statuses {
		e.Checks = append(e.Checks, &api.HealthCheck{CheckID: "c" + string(rune('0'+i)), Status: s})
	}
	return e
}

// recSink records every member list it is given.
type recSink struct {
	mu      sync.Mutex
	updates [][]balancer.Member
	srcs    []balancer.Source
	ch      chan []balancer.Member
}

func newRecSink() *recSink { return &recSink{ch: make(chan []balancer.Member, 100)} }

func (s *recSink) SetMembers(src balancer.Source, ms []balancer.Member) {
	s.mu.Lock()
	s.updates = append(s.updates, slices.Clone(ms))
	s.srcs = append(s.srcs, src)
	s.mu.Unlock()
	s.ch <- ms
}

func (s *recSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.updates)
}

func (s *recSink) last() []balancer.Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.updates) == 0 {
		return nil
	}
	return s.updates[len(s.updates)-1]
}

func addrs(ms []balancer.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Address
	}
	return out
}

// testConsul builds a Consul over f with the given options.
func testConsul(t *testing.T, f HealthAPI, o ConsulOptions) *Consul {
	t.Helper()
	o.Health = f
	c, err := NewConsul(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runConsul runs c until the test ends and checks Run returns.
func runConsul(t *testing.T, c *Consul) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return cancel
}
