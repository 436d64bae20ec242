package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/admin"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// testApp is a whole kelpie started in-process on loopback ports for
// end-to-end tests. Build one with startApp.
type testApp struct {
	*app
	ProxyAddr string // host:port of the proxy listener
	AdminURL  string // http://host:port of the admin endpoint
	Path      string // the config file, rewritable for reload tests
	Logs      *testkit.LogBuffer
}

// startApp writes yaml to a temp config file, starts kelpie on free
// loopback ports (the file's listen addresses are ignored) and shuts it down
// when the test ends.
func startApp(t testing.TB, yaml string) *testApp {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kelpie.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &testkit.LogBuffer{}
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	a, err := newApp(cfg, log, level)
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	if err := a.start("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatalf("start: %v", err)
	}
	ta := &testApp{app: a, ProxyAddr: a.proxyLn.Addr().String(), AdminURL: "http://" + a.adminLn.Addr().String(), Path: path, Logs: logs}
	t.Cleanup(func() {
		if err := a.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("kelpie log:\n%s", logs.String())
		}
	})
	return ta
}

// Get sends one GET through the proxy and returns status and body.
func (ta *testApp) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + ta.ProxyAddr + path)
	if err := fasthttp.DoTimeout(req, resp, 20*time.Second); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode(), string(resp.Body())
}

// Upstreams fetches the admin API's view of the pools.
func (ta *testApp) Upstreams(t testing.TB) admin.UpstreamsResponse {
	t.Helper()
	resp, err := http.Get(ta.AdminURL + "/api/v1/upstreams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v admin.UpstreamsResponse
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// The names below are testkit's helpers under the names this package's
// tests have always used.

// eventually is testkit.Eventually: for facts observed over real sockets
// where no event exists to wait on.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, timeout, what, cond)
}

// backend is a testkit.Backend: a fasthttp server on a loopback port
// (Addr, Close, Kill) that counts the requests it serves.
type backend struct{ *testkit.Backend }

// startBackend serves h on a free loopback port until the test ends.
func startBackend(t testing.TB, h fasthttp.RequestHandler) *backend {
	t.Helper()
	return &backend{testkit.StartBackend(t, h)}
}

// Hits is how many requests the backend has received, probes included.
func (b *backend) Hits() int { return int(b.Requests.Load()) }

// named answers 200 with the given body on every path.
func named(name string) fasthttp.RequestHandler { return testkit.Named(name) }

// yamlBackends renders addresses as a backends list for test configs.
func yamlBackends(addrs ...string) string {
	var sb strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&sb, "      - address: %q\n", a)
	}
	return sb.String()
}
