package containertest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// consulBound is how long a Consul change may take to reach the pool: the
// blocking query returns at once on a change, so this is one round trip
// plus the agent's own propagation, with room for a busy machine.
const consulBound = 2 * time.Second

// agent is a Consul agent container on an env's network.
type agent struct {
	c   *Container
	url string // http://127.0.0.1:PORT
}

// startConsul starts a dev agent reachable on net as "consul" and waits
// for it to elect itself.
func startConsul(t *testing.T, net string) *agent {
	img := ConsulImage(t)
	c := Run(t, "kelpie-test-consul", "--network", net, "--network-alias", "consul", "-p", "127.0.0.1::8500", img)
	a := &agent{c: c, url: "http://" + c.HostPort(t, "8500/tcp")}
	testkit.Eventually(t, 30*time.Second, "consul leader elected", func() bool {
		resp, err := http.Get(a.url + "/v1/status/leader")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && len(bytes.Trim(b, `"`+"\n")) > 0
	})
	return a
}

func (a *agent) put(t *testing.T, path, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, a.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("consul PUT %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("consul PUT %s: %s %s", path, resp.Status, b)
	}
}

// register adds a "web" instance named by its DNS alias, with an HTTP
// check Consul runs against it.
func (a *agent) register(t *testing.T, alias string) {
	t.Helper()
	a.put(t, "/v1/agent/service/register", fmt.Sprintf(`{"ID":%q,"Name":"web","Address":%q,"Port":8080,
		"Check":{"HTTP":"http://%s:8080/health","Interval":"1s","Timeout":"500ms","Status":"passing"}}`, alias, alias, alias))
}

// TestContainerConsulDeregisterAndMaintenance takes one backend out through
// Consul by deregistering it and another by maintenance mode, under load.
func TestContainerConsulDeregisterAndMaintenance(t *testing.T) {
	RequireEngine(t)
	// The agent must run before kelpie starts; newEnv starts the backends
	// on its own network, so start the agent on a network made here and
	// hand that to newEnv.
	net := Network(t)
	a := startConsul(t, net)
	for _, b := range []string{"b1", "b2", "b3"} {
		a.register(t, b)
	}
	e := newEnv(t, envOptions{
		network:  net,
		extra:    "consul:\n  address: \"consul:8500\"\n",
		upstream: "    consul:\n      service: web\n",
	})
	l := startLoad(t, e.proxy, "/")
	warmUp(t, l, loadRate)

	start := time.Now()
	a.put(t, "/v1/agent/service/deregister/b1", "")
	d1 := e.timeUntil(start, consulBound, "deregistered b1 out of rotation", func() bool { return !e.eligible("b1") })
	warmUp(t, l, loadRate)
	served := l.snapshot().By["b1"]

	start = time.Now()
	a.put(t, "/v1/agent/service/maintenance/b2?enable=true&reason=kelpie-test", "")
	d2 := e.timeUntil(start, consulBound, "b2 in maintenance out of rotation", func() bool { return !e.eligible("b2") })
	warmUp(t, l, 2*loadRate)
	if got := l.snapshot().By["b1"]; got > served {
		t.Errorf("b1 served %d requests after it was deregistered", got-served)
	}

	a.put(t, "/v1/agent/service/maintenance/b2?enable=false", "")
	e.timeUntil(time.Now(), 10*time.Second, "b2 back after maintenance", func() bool { return e.eligible("b2") })
	warmUp(t, l, loadRate)
	r := l.stop()
	requireNoErrors(t, r)
	t.Logf("consul: deregistered b1 left in %s, b2 in maintenance left in %s (bound %s); load: %s",
		d1.Round(time.Millisecond), d2.Round(time.Millisecond), consulBound, r)
}
