package proxy

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// recorder is a backend that keeps the last request's headers.
type recorder struct {
	mu   sync.Mutex
	hdrs map[string][]string
	raw  string
	*backend
}

func startRecorder(t *testing.T, respond func(ctx *fasthttp.RequestCtx)) *recorder {
	r := &recorder{}
	r.backend = startBackend(t, func(ctx *fasthttp.RequestCtx) {
		r.mu.Lock()
		r.hdrs = map[string][]string{}
		for k, v := range ctx.Request.Header.All() {
			r.hdrs[strings.ToLower(string(k))] = append(r.hdrs[strings.ToLower(string(k))], string(v))
		}
		r.raw = string(ctx.Request.Header.RawHeaders())
		r.mu.Unlock()
		if respond != nil {
			respond(ctx)
		}
	})
	return r
}

func (r *recorder) get(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hdrs[strings.ToLower(name)]
}

func TestRequestHeaderHygiene(t *testing.T) {
	rec := startRecorder(t, nil)
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, rec.addr)}, Options{})
	tests := []struct {
		name    string
		headers string
		absent  []string
		want    map[string]string // header -> exact joined value
		rawHas  string            // a line the backend must receive verbatim
	}{
		{
			name:    "hop-by-hop",
			headers: "Connection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: Basic x\r\nX-Secret: 1\r\nX-Keep: yes\r\n",
			absent:  []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade", "Proxy-Authorization", "X-Secret"},
			want:    map[string]string{"X-Keep": "yes"},
		},
		{
			name:    "connection tokens case-insensitive",
			headers: "connection: x-one,  X-TWO\r\nx-one: 1\r\nX-Two: 2\r\n",
			absent:  []string{"X-One", "X-Two", "Connection"},
		},
		{
			name:    "connection cannot remove kelpie headers",
			headers: "Connection: X-Forwarded-For, x-forwarded-proto, X-Forwarded-Host, X-Request-Id, Host, Content-Length\r\nX-Forwarded-For: 192.0.2.1\r\nX-Request-Id: abc\r\n",
			want:    map[string]string{"X-Forwarded-For": "192.0.2.1, 127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "example.com", "X-Request-Id": "abc", "Host": "example.com"},
		},
		{
			name:    "xff appended across lines",
			headers: "X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 198.51.100.2, 10.0.0.1\r\n",
			want:    map[string]string{"X-Forwarded-For": "192.0.2.1, 198.51.100.2, 10.0.0.1, 127.0.0.1"},
		},
		{
			name:    "forwarded proto and host overwritten",
			headers: "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n",
			want:    map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "example.com"},
		},
		{
			name:    "underscore and dotted aliases dropped",
			headers: "X_Forwarded_For: 6.6.6.6\r\nX.Forwarded.For: 6.6.6.6\r\nMy_Header: x\r\nX.Dotted.Other: kept\r\n",
			absent:  []string{"X_Forwarded_For", "X.Forwarded.For", "My_Header"},
			want:    map[string]string{"X-Forwarded-For": "127.0.0.1", "X.Dotted.Other": "kept"},
		},
		{
			name:    "expect dropped",
			headers: "Expect: something\r\n",
			absent:  []string{"Expect"},
		},
		{
			name:    "bad request id replaced",
			headers: "X-Request-Id: " + strings.Repeat("a", 200) + "\r\n",
		},
		{
			name:    "cookies verbatim",
			headers: "Cookie: a=1;b=2; c=\"x y\"\r\n",
			rawHas:  "Cookie: a=1;b=2; c=\"x y\"\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", px.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			resp := rawOne(t, c, "GET /h HTTP/1.1\r\nHost: example.com\r\n"+tc.headers+"\r\n")
			if resp.StatusCode() != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
			}
			for _, h := range tc.absent {
				if v := rec.get(h); v != nil {
					t.Errorf("%s reached the backend: %q (raw %q)", h, v, rec.raw)
				}
			}
			for h, want := range tc.want {
				if got := strings.Join(rec.get(h), " | "); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			rec.mu.Lock()
			if !strings.Contains(rec.raw, tc.rawHas) {
				t.Errorf("backend raw headers %q lack %q", rec.raw, tc.rawHas)
			}
			rec.mu.Unlock()
			ids := rec.get("X-Request-Id")
			if len(ids) != 1 || ids[0] == "" || len(ids[0]) > maxRequestID {
				t.Errorf("X-Request-Id = %q, want exactly one usable id", ids)
			}
			if len(rec.get("X-Forwarded-For")) != 1 {
				t.Errorf("X-Forwarded-For lines = %q, want one", rec.get("X-Forwarded-For"))
			}
		})
	}
}

func TestClientConnectionCloseNotForwarded(t *testing.T) {
	rec := startRecorder(t, nil)
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, rec.addr)}, Options{})
	for i := range 5 {
		out := raw(t, px.addr, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(strings.ToLower(out), "connection: close") {
			t.Fatalf("request %d: %q", i, out)
		}
		if rec.get("Connection") != nil {
			t.Fatalf("Connection reached the backend: %q", rec.get("Connection"))
		}
	}
	if n := rec.conns.Load(); n != 1 {
		t.Errorf("5 client Connection: close requests used %d backend connections, want 1", n)
	}
}

func TestResponseHopByHopAndBackendClose(t *testing.T) {
	rec := startRecorder(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Connection", "X-Internal")
		ctx.Response.Header.Set("X-Internal", "secret")
		ctx.Response.Header.Set("Keep-Alive", "timeout=1")
		ctx.Response.Header.Set("X-Public", "ok")
		ctx.SetConnectionClose()
		ctx.WriteString("body")
	})
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, rec.addr)}, Options{})
	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 { // the client connection survives backend closes
		resp := rawOne(t, c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode() != 200 || string(resp.Body()) != "body" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode(), resp.Body())
		}
		if resp.ConnectionClose() {
			t.Fatalf("backend's Connection: close reached the client")
		}
		for _, h := range []string{"X-Internal", "Keep-Alive"} {
			if v := resp.Header.Peek(h); v != nil {
				t.Errorf("response kept %s: %q", h, v)
			}
		}
		if string(resp.Header.Peek("X-Public")) != "ok" {
			t.Errorf("X-Public lost")
		}
	}
}

func TestRequestIDUnique(t *testing.T) {
	p, err := New(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 1000 {
		id := string(p.newRequestID(nil))
		if seen[id] || len(id) != 33 {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}
