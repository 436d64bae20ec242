package proxy

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// TestSlowlorisDoesNotStarveClients opens 200 connections that never finish
// their request head; real requests keep being served at once, and every
// slow connection is closed by the read timeout.
func TestSlowlorisDoesNotStarveClients(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{ReadTimeout: 500 * time.Millisecond})
	var slow []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", px.addr)
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	c := clientFor(px.addr)
	for range 20 {
		t0 := time.Now()
		if resp := do(t, c, "GET", "a", "/"); resp.StatusCode() != 200 {
			t.Fatalf("real client got %d", resp.StatusCode())
		}
		if d := time.Since(t0); d > 200*time.Millisecond {
			t.Errorf("real request took %v under slowloris", d)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var notClosed int
	for _, sc := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sc.Close()
			_ = sc.SetReadDeadline(start.Add(3 * time.Second))
			b, err := io.ReadAll(sc)
			if err != nil || (len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408")) {
				mu.Lock()
				notClosed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if notClosed > 0 {
		t.Errorf("%d slow connections were not closed (with 408 or silently) within 3s", notClosed)
	}
	if be.bytes.Load() == 0 || be.reqs.Load() != 20 {
		t.Errorf("backend saw %d requests, want the 20 real ones", be.reqs.Load())
	}
}

// TestShutdownFinishesInFlight starts a request, shuts down while it is in
// flight, and checks it completes, new connections are refused and Shutdown
// returns once it is done.
func TestShutdownFinishesInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			close(entered)
			<-release
		}
		ctx.WriteString("done")
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	p, err := New(Options{}, []Route{{Upstream: &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	idle, err := net.Dial("tcp", ln.Addr().String()) // an idle keep-alive client
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	rawOne(t, idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")

	got := make(chan string, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n") //nolint:errcheck
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	// The idle keep-alive connection is closed by Shutdown.
	_ = idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("idle connection: read %d, %v; want closed", n, err)
	}
	unblock()
	out := <-got
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.HasSuffix(out, "done") || !strings.Contains(strings.ToLower(out), "connection: close") {
		t.Errorf("in-flight request: %q", out)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts after Shutdown")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
