package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/discovery/consultest"
)

// TestReloadAddsFirstConsulUpstream: kelpie started without any Consul
// upstream gains one by a reload (the Consul client is made then, from the
// file's consul block) against a real agent; removing it stops its watch,
// and adding it again reuses the client.
func TestReloadAddsFirstConsulUpstream(t *testing.T) {
	agent := consultest.Start(t)
	static, b1 := startBackend(t, named("static")), startBackend(t, named("b1"))
	register(agent, "b1", b1, api.HealthPassing)
	staticOnly := fmt.Sprintf(`
upstreams:
  - name: static
    backends:
      - address: %q
`, static.Addr)
	withWeb := fmt.Sprintf(`
consul:
  address: %q
upstreams:
  - name: static
    backends:
      - address: %q
  - name: web
    slow_start: 0s
    consul: {service: web}
routes:
  - {path_prefix: /, upstream: static}
  - {path_prefix: /web/, upstream: web}
`, agent.HTTPAddr, static.Addr)

	ta := startApp(t, staticOnly)
	if ta.consul.Load() != nil {
		t.Fatal("Consul client made without a Consul upstream")
	}
	writeConfig(t, ta.Path, withWeb)
	if err := ta.reload(); err != nil {
		t.Fatalf("reload adding the first Consul upstream: %v", err)
	}
	client := ta.consul.Load()
	if client == nil {
		t.Fatal("no Consul client after the reload")
	}
	d := ta.waitBackends(t, consulPropagation, b1.Addr)
	t.Logf("reloaded Consul upstream synced in %v", d)
	if code, body := ta.Get(t, "/web/x"); code != 200 || body != "b1" {
		t.Fatalf("/web/ = %d %q, want b1", code, body)
	}
	if code, body := ta.Get(t, "/x"); code != 200 || body != "static" {
		t.Fatalf("/ = %d %q, want static", code, body)
	}
	eventually(t, 5*time.Second, "/readyz 200", func() bool {
		code, _ := httpGet(t, ta.AdminURL+"/readyz")
		return code == 200
	})
	_, metrics := httpGet(t, ta.AdminURL+"/metrics")
	if !strings.Contains(metrics, `kelpie_consul_last_sync_age_seconds{service="web"}`) {
		t.Error("no kelpie_consul_last_sync_age_seconds for the reloaded Consul upstream")
	}

	// Removing the upstream stops its watch; Consul's Run stays for later.
	writeConfig(t, ta.Path, staticOnly)
	if err := ta.reload(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the watch loop to stop", func() bool {
		_, _, consul := goroutines()
		return consul == 1 && len(client.Status()) == 0
	})
	if code, _ := ta.Get(t, "/web/x"); code != 200 {
		t.Fatalf("/web/ = %d after web was removed, want 200 from static", code)
	}

	// Back again, with another consul address in the file: the running
	// client is kept, and the change reported as needing a restart.
	writeConfig(t, ta.Path, strings.Replace(withWeb, agent.HTTPAddr, "127.0.0.1:1", 1))
	if err := ta.reload(); err != nil {
		t.Fatal(err)
	}
	if ta.consul.Load() != client {
		t.Fatal("a second reload replaced the Consul client")
	}
	ta.waitBackends(t, consulPropagation, b1.Addr)
	if !strings.Contains(ta.Logs.String(), `msg="config change needs a restart; keeping the running value" key=consul.address`) {
		t.Errorf("no restart warning for consul.address:\n%s", ta.Logs.String())
	}
}
