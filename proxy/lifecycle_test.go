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

// Slowloris (connections that never finish their head do not starve real
// clients, never reach a backend, and are cut by the read timeout) is
// tested once, through the whole kelpie and its limits.read_timeout:
// TestHygieneSlowloris in cmd/kelpie.

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
