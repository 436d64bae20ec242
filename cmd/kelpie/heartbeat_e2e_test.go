package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// beat sends one heartbeat for addr and returns the status.
func beat(t *testing.T, ta *testApp, upstream, addr string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, ta.AdminURL+"/api/v1/upstreams/"+upstream+"/backends/"+addr+"/heartbeat", nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	sb.Write(buf[:n])
	return resp.StatusCode, sb.String()
}

// TestHeartbeatE2E: with health.heartbeat, a backend whose heartbeats stop
// leaves rotation with the reason heartbeat_missed after the TTL, while one
// that keeps beating stays; beats bring it back after rise in a row. The
// detection shows in the metrics under mechanism "heartbeat".
func TestHeartbeatE2E(t *testing.T) {
	t.Setenv("KELPIE_E2E_TOKEN", e2eToken)
	a, b := startBackend(t, named("a")), startBackend(t, named("b"))
	ta := startApp(t, fmt.Sprintf(`admin:
  token_env: KELPIE_E2E_TOKEN
upstreams:
  - name: web
    slow_start: 0s
    backends:
%s    health:
      heartbeat: {ttl: 400ms}
  - name: other
    backends:
%sroutes:
  - upstream: web
`, yamlBackends(a.Addr, b.Addr), yamlBackends(a.Addr)))

	// a beats every 50ms until the test ends; b beats for a while, then stops.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				beat(t, ta, "web", a.Addr)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for range 3 {
		if code, body := beat(t, ta, "web", b.Addr); code != 200 || !strings.Contains(body, `"eligible": true`) {
			t.Fatalf("beat b: %d %s", code, body)
		}
	}
	stopped := time.Now()
	eventually(t, 5*time.Second, "b out with heartbeat_missed", func() bool {
		return slices.Contains(findBackend(t, ta, "web", b.Addr).Down, "heartbeat_missed")
	})
	if took := time.Since(stopped); took < 400*time.Millisecond {
		t.Fatalf("b out after %s, before its ttl", took)
	}
	if v := findBackend(t, ta, "web", a.Addr); !v.Eligible {
		t.Fatalf("a, beating, is out: %v", v.Down)
	}
	for range 10 {
		if code, body := ta.Get(t, "/x"); code != 200 || body != "a" {
			t.Fatalf("with b missed: %d %q", code, body)
		}
	}
	// One beat is not enough (rise 2); a second brings it back.
	beat(t, ta, "web", b.Addr)
	if v := findBackend(t, ta, "web", b.Addr); v.Eligible {
		t.Fatal("back after one beat")
	}
	beat(t, ta, "web", b.Addr)
	eventually(t, 5*time.Second, "b back after two beats", func() bool { return findBackend(t, ta, "web", b.Addr).Eligible })
	if m := httpGetBody(t, ta.AdminURL+"/metrics"); !strings.Contains(m, `kelpie_backend_detection_seconds_count{mechanism="heartbeat",upstream="web"} 1`) {
		t.Error("no heartbeat detection in the metrics")
	}

	// An upstream without heartbeat checks, an unknown backend, no token.
	if code, body := beat(t, ta, "other", a.Addr); code != 409 || !strings.Contains(body, "not configured") {
		t.Errorf("beat on other: %d %s, want 409", code, body)
	}
	if code, _ := beat(t, ta, "web", "127.0.0.1:1"); code != 404 {
		t.Errorf("beat on an unknown backend: %d, want 404", code)
	}
	req, _ := http.NewRequest(http.MethodPut, ta.AdminURL+"/api/v1/upstreams/web/backends/"+b.Addr+"/heartbeat", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("beat without the token: %v %v, want 401", resp, err)
	}
}

func TestHeartbeatConfigErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hb.yaml")
	os.WriteFile(path, []byte("upstreams:\n  - name: web\n    backends: [{address: \"127.0.0.1:9001\"}]\n    health:\n      heartbeat:\n        ttl: 0s\n"), 0o644)
	var out, errb strings.Builder
	if code := run([]string{"check", "-config", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), path+":6: upstream \"web\": health.heartbeat.ttl must be at least 100ms") {
		t.Fatalf("exit %d: %q", code, errb.String())
	}
}
