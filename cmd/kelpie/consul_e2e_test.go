package main

// End-to-end Consul discovery: a real consul agent -dev, real fasthttp
// backends registered in it, and the whole kelpie in between, with clients
// sending requests all along. Not one client request may fail.

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/discovery/consultest"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// consulPropagation bounds how long a change registered in Consul may take
// to change routing. Measured here: about 100ms; the slack is for a loaded
// CI machine (once seen above 1s with the load average at 16 on 2 cores).
const consulPropagation = 2 * time.Second

// checkLoad fails t if any request of l failed so far.
func checkLoad(t *testing.T, l *testkit.Load, phase string) {
	t.Helper()
	if n := l.Failed(); n > 0 {
		t.Fatalf("%s: %d client errors (of %d ok), first: %v", phase, n, l.OK(), l.Errors())
	}
}

// webBackends lists the addresses the admin API shows for upstream web.
func (ta *testApp) webBackends(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, u := range ta.Upstreams(t).Upstreams {
		if u.Name == "web" {
			for _, b := range u.Backends {
				out[b.Address] = b.Eligible
			}
		}
	}
	return out
}

// waitBackends polls the admin API until upstream web's eligible backends
// are exactly want, and returns how long that took.
func (ta *testApp) waitBackends(t *testing.T, within time.Duration, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, within, fmt.Sprintf("web backends %v", want), func() bool {
		got := ta.webBackends(t)
		n := 0
		for _, el := range got {
			if el {
				n++
			}
		}
		if n != len(want) {
			return false
		}
		for _, a := range want {
			if !got[a] {
				return false
			}
		}
		return true
	})
	return time.Since(start)
}

func register(a *consultest.Agent, id string, b *backend, status string) {
	host, port, _ := net.SplitHostPort(b.Addr)
	p, _ := strconv.Atoi(port)
	a.Register(id, "web", host, p, nil, nil, status)
}

func TestConsulE2E(t *testing.T) {
	agent := consultest.Start(t)
	b1 := startBackend(t, named("b1"))
	b2 := startBackend(t, named("b2"))
	b3 := startBackend(t, named("b3"))
	b4 := startBackend(t, named("b4"))
	register(agent, "b1", b1, api.HealthPassing)
	register(agent, "b2", b2, api.HealthPassing)
	// The dev agent has ACLs off and ignores the token: a canary to look
	// for in logs, the admin API and metrics.
	const token = "canary-consul-token-7d1f"
	t.Setenv("KELPIE_E2E_CONSUL_TOKEN", token)

	ta := startApp(t, fmt.Sprintf(`
consul:
  address: %q
  token_env: KELPIE_E2E_CONSUL_TOKEN
upstreams:
  - name: web
    slow_start: 0s
    consul:
      service: web
`, agent.HTTPAddr))
	d := ta.waitBackends(t, 2*time.Second, b1.Addr, b2.Addr)
	t.Logf("first sync visible in the admin API after %v", d)
	l := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 4, Requests: 1_000_000})
	t.Cleanup(func() { l.Stop() })

	// A new passing instance gets traffic within about a second.
	register(agent, "b3", b3, api.HealthPassing)
	start := time.Now()
	eventually(t, consulPropagation, "b3 gets traffic", func() bool { return b3.Hits() > 0 })
	t.Logf("registered b3 got traffic after %v", time.Since(start))

	// Deregistered, or check turned critical: out of rotation within
	// about a second, no client errors.
	agent.Deregister("b1")
	d = ta.waitBackends(t, consulPropagation, b2.Addr, b3.Addr)
	t.Logf("deregistered b1 left rotation after %v", d)
	agent.SetStatus("b2", api.HealthCritical)
	d = ta.waitBackends(t, consulPropagation, b3.Addr)
	t.Logf("critical b2 left rotation after %v", d)
	hits := b2.Hits()
	agent.SetStatus("b2", api.HealthPassing)
	ta.waitBackends(t, consulPropagation, b2.Addr, b3.Addr)
	eventually(t, time.Second, "b2 back in traffic", func() bool { return b2.Hits() > hits })
	checkLoad(t, l, "membership changes")

	// Consul hung (SIGSTOP), then dead: the pool stays as it was and every
	// request still succeeds.
	before := ta.webBackends(t)
	okBefore := l.OK()
	agent.Pause()
	time.Sleep(2 * time.Second) // the outage under test
	agent.Kill()
	time.Sleep(3 * time.Second) // the outage under test
	if got := ta.webBackends(t); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("pool changed during the Consul outage: %v, was %v", got, before)
	}
	checkLoad(t, l, "Consul outage")
	t.Logf("during the 5s outage: %d requests, 0 errors", l.OK()-okBefore)

	// Consul back with other registrations: picked up. The new agent has
	// forgotten everything and its index starts over.
	agent.Restart()
	register(agent, "b3", b3, api.HealthPassing)
	register(agent, "b4", b4, api.HealthPassing)
	start = time.Now()
	ta.waitBackends(t, 15*time.Second, b3.Addr, b4.Addr)
	t.Logf("restarted agent's registrations picked up after %v", time.Since(start))
	eventually(t, time.Second, "b4 gets traffic", func() bool { return b4.Hits() > 0 })
	l.Stop()
	checkLoad(t, l, "whole test")

	_, status := httpGet(t, ta.AdminURL+"/api/v1/status")
	var st struct {
		Consul []struct {
			Spec struct {
				Service string `json:"service"`
			} `json:"spec"`
			Synced bool `json:"synced"`
		} `json:"consul"`
	}
	if err := json.Unmarshal([]byte(status), &st); err != nil || len(st.Consul) != 1 ||
		st.Consul[0].Spec.Service != "web" || !st.Consul[0].Synced {
		t.Fatalf("consul watch status in /api/v1/status: %v %s", err, status)
	}
	_, metrics := httpGet(t, ta.AdminURL+"/metrics")
	if !strings.Contains(metrics, `kelpie_consul_last_sync_age_seconds{service="web"}`) {
		t.Fatal("no kelpie_consul_last_sync_age_seconds in /metrics")
	}
	for what, text := range map[string]string{"log": ta.Logs.String(), "status": status, "metrics": metrics} {
		if strings.Contains(text, token) {
			t.Fatalf("Consul token in %s", what)
		}
	}
	t.Logf("total: %d requests, %d errors", l.OK(), l.Failed())
}
