package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/admin"
	"github.com/kelpie-lb/kelpie/config"
)

// testApp is a whole kelpie started in-process on loopback ports for
// end-to-end tests. Build one with startApp.
type testApp struct {
	*app
	ProxyAddr string // host:port of the proxy listener
	AdminURL  string // http://host:port of the admin endpoint
	Path      string // the config file, rewritable for reload tests
	Logs      *syncBuffer
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
	logs := &syncBuffer{}
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

// eventually polls cond every 10ms until it holds or timeout passes. It is
// for end-to-end tests where the condition is a fact observed over real
// sockets and no event is available to wait on.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// backend is a real fasthttp server on a loopback port, for e2e tests.
type backend struct {
	Addr string
	ln   net.Listener
	srv  *fasthttp.Server
	mu   sync.Mutex
	hits int
}

// startBackend serves h on a free loopback port until the test ends or
// Close is called. Every request counts towards Hits.
func startBackend(t testing.TB, h fasthttp.RequestHandler) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{Addr: ln.Addr().String(), ln: ln}
	b.srv = &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		b.mu.Lock()
		b.hits++
		b.mu.Unlock()
		h(ctx)
	}}
	go b.srv.Serve(ln)
	t.Cleanup(b.Close)
	return b
}

// Hits is how many requests the backend has received.
func (b *backend) Hits() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

// Close stops the backend: its listener closes and open connections end.
func (b *backend) Close() {
	b.srv.Shutdown()
}

// named answers 200 with the given body on every path.
func named(name string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) { ctx.WriteString(name) }
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// yamlBackends renders addresses as a backends list for test configs.
func yamlBackends(addrs ...string) string {
	var sb strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&sb, "      - address: %q\n", a)
	}
	return sb.String()
}

var _ io.Writer = (*syncBuffer)(nil)
