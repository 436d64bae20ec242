package cluster

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/discovery/consultest"
)

// needConsul starts a real Consul agent (under -short, a missing binary
// skips the test).
func needConsul(t *testing.T) *consultest.Agent {
	t.Helper()
	return consultest.Start(t)
}

// cutter is a TCP relay in front of Consul that a test can cut, as if the
// instance behind it were partitioned from Consul (or dead, seen from Consul).
type cutter struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	c.wg.Add(1)
	go c.serve()
	t.Cleanup(func() {
		ln.Close()
		c.Cut()
		c.wg.Wait()
	})
	return c
}

func (c *cutter) Addr() string { return c.ln.Addr().String() }

func (c *cutter) serve() {
	defer c.wg.Done()
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.cut {
			c.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.DialTimeout("tcp", c.target, time.Second)
		if err != nil {
			c.mu.Unlock()
			in.Close()
			continue
		}
		c.conns[in], c.conns[out] = struct{}{}, struct{}{}
		c.mu.Unlock()
		c.wg.Add(2)
		go c.pipe(in, out)
		go c.pipe(out, in)
	}
}

func (c *cutter) pipe(dst, src net.Conn) {
	defer c.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut closes every relayed connection and refuses new ones.
func (c *cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for conn := range c.conns {
		conn.Close()
		delete(c.conns, conn)
	}
}

// Heal relays again.
func (c *cutter) Heal() {
	c.mu.Lock()
	c.cut = false
	c.mu.Unlock()
}

func clientAt(t *testing.T, addr string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Token = ""
	// Bounded: a call to a killed or paused agent must not hang a test.
	// Blocking queries here wait at most SessionTTL/2 (5s).
	cfg.HttpClient = &http.Client{Timeout: 15 * time.Second}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// transition is one OnChange call with the time it happened.
type transition struct {
	at time.Time
	st Status
}

// member is one elector under test with its relay and recorded history.
type member struct {
	id     string
	el     *Elector
	cut    *cutter
	cancel context.CancelFunc
	done   chan struct{}
	ch     chan transition

	mu      sync.Mutex
	history []transition
}

func startMember(t *testing.T, agent *consultest.Agent, id, key string, tweak func(*ElectorOptions)) *member {
	return startMemberHA(t, agent, id, key, tweak, nil)
}

// startMemberHA is startMember with the elector wrapped in an HA built by
// wrap (nil: a bare Elector).
func startMemberHA(t *testing.T, agent *consultest.Agent, id, key string, tweak func(*ElectorOptions), wrap func(ElectorOptions) *HA) *member {
	t.Helper()
	m := &member{id: id, cut: newCutter(t, agent.HTTPAddr), done: make(chan struct{}), ch: make(chan transition, 64)}
	o := ElectorOptions{
		Client: clientAt(t, m.cut.Addr()), Key: key, ID: id,
		OnChange: func(st Status) {
			tr := transition{at: time.Now(), st: st}
			m.mu.Lock()
			m.history = append(m.history, tr)
			m.mu.Unlock()
			select {
			case m.ch <- tr:
			default:
			}
		},
	}
	if tweak != nil {
		tweak(&o)
	}
	var run func(context.Context) error
	if wrap != nil {
		h := wrap(o)
		m.el, run = h.el, h.Run
	} else {
		el, err := NewElector(o)
		if err != nil {
			t.Fatal(err)
		}
		m.el, run = el, el.Run
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { defer close(m.done); run(ctx) }()
	t.Cleanup(m.stop)
	return m
}

func (m *member) stop() {
	m.cancel()
	<-m.done
}

// waitRole waits up to d for the member to reach role and returns when.
func (m *member) waitRole(t *testing.T, role Role, d time.Duration) time.Time {
	t.Helper()
	return m.waitRoleAfter(t, role, time.Time{}, d)
}

// waitRoleAfter waits up to d for the member to enter role after from.
func (m *member) waitRoleAfter(t *testing.T, role Role, from time.Time, d time.Duration) time.Time {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		for _, tr := range m.history {
			if tr.st.Role == role && tr.at.After(from) && m.el.Status().Role == role {
				m.mu.Unlock()
				return tr.at
			}
		}
		m.mu.Unlock()
		select {
		case <-m.ch:
		case <-deadline.C:
			t.Fatalf("%s: not %s after %v; now %+v", m.id, role, d, m.el.Status())
		}
	}
}

// leaderIntervals returns [from, to) intervals during which m was leader;
// an open interval ends at end.
func (m *member) leaderIntervals(end time.Time) [][2]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out [][2]time.Time
	var from time.Time
	for _, tr := range m.history {
		if tr.st.Role == RoleLeader && from.IsZero() {
			from = tr.at
		} else if tr.st.Role != RoleLeader && !from.IsZero() {
			out = append(out, [2]time.Time{from, tr.at})
			from = time.Time{}
		}
	}
	if !from.IsZero() {
		out = append(out, [2]time.Time{from, end})
	}
	return out
}

// noOverlap fails t if two members' leader intervals overlap.
func noOverlap(t *testing.T, ms ...*member) {
	t.Helper()
	end := time.Now()
	for i, a := range ms {
		for _, b := range ms[i+1:] {
			for _, x := range a.leaderIntervals(end) {
				for _, y := range b.leaderIntervals(end) {
					if x[0].Before(y[1]) && y[0].Before(x[1]) {
						t.Errorf("%s led %v..%v and %s led %v..%v at the same time",
							a.id, x[0].Format("15:04:05.000"), x[1].Format("15:04:05.000"),
							b.id, y[0].Format("15:04:05.000"), y[1].Format("15:04:05.000"))
					}
				}
			}
		}
	}
}
