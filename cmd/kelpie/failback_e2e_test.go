package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestManualFailbackE2E: with failback: manual, a primary that failed its
// probes and passes them again waits as awaiting_ready while the backup
// keeps the traffic, until `kelpie ready` puts it back.
func TestManualFailbackE2E(t *testing.T) {
	t.Setenv("KELPIE_E2E_TOKEN", e2eToken)
	a := newHealthFlipper("a")
	ba, bc := startBackend(t, a.handle), startBackend(t, named("c"))
	ta := startApp(t, fmt.Sprintf(`admin:
  token_env: KELPIE_E2E_TOKEN
upstreams:
  - name: web
    failback: manual
    slow_start: 0s
    backends:
      - address: %q
      - address: %q
        backup: true
    health:
      active: {path: /health, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}
`, ba.Addr, bc.Addr))
	waitHealthy(t, ta, ba.Addr, bc.Addr)
	if code, body := ta.Get(t, "/x"); code != 200 || body != "a" {
		t.Fatalf("primary up: %d %q", code, body)
	}
	a.status.Store(503)
	ta.waitEligible(t, ba.Addr, false, 5*time.Second)
	a.status.Store(200)
	eventually(t, 5*time.Second, "a awaiting_ready", func() bool {
		v := findBackend(t, ta, "web", ba.Addr)
		return v.Admin == "awaiting_ready" && v.Health == "healthy"
	})
	for range 10 {
		if code, body := ta.Get(t, "/x"); code != 200 || body != "c" {
			t.Fatalf("awaiting ready: %d %q, want the backup", code, body)
		}
	}
	code, out, errOut := runCLI(func(a []string, o, e *bytes.Buffer) int { return runBackends(a, o, e) }, "-admin", ta.AdminURL)
	if code != 0 || !strings.Contains(out, "awaiting_ready") {
		t.Fatalf("kelpie backends: %d %s %s", code, out, errOut)
	}
	code, _, errOut = runCLI(func(a []string, o, e *bytes.Buffer) int { return runReady(a, o, e) }, "-admin", ta.AdminURL, "-token", e2eToken, "web", ba.Addr)
	if code != 0 {
		t.Fatalf("kelpie ready: %d %s", code, errOut)
	}
	if code, body := ta.Get(t, "/x"); code != 200 || body != "a" {
		t.Fatalf("after ready: %d %q, want the primary", code, body)
	}
	m := httpGetBody(t, ta.AdminURL+"/metrics")
	for _, want := range []string{`kelpie_upstream_failovers_total{to="backup",upstream="web"} 1`, `kelpie_upstream_failovers_total{to="primary",upstream="web"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestFailbackConfigError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fb.yaml")
	os.WriteFile(path, []byte("upstreams:\n  - name: web\n    failback: sometimes\n    backends: [{address: \"127.0.0.1:9001\"}]\n"), 0o644)
	var out, errb strings.Builder
	if code := run([]string{"check", "-config", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), path+`:3: upstream "web": failback "sometimes": want auto or manual`) {
		t.Fatalf("exit %d: %q", code, errb.String())
	}
}
