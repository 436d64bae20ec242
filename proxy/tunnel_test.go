package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// startWSBackend is testkit's WebSocket echo backend, TLS with a
// certificate from ca when ca is set.
func startWSBackend(t *testing.T, ca *testkit.CA) *testkit.WSBackend {
	t.Helper()
	if ca == nil {
		return testkit.StartWSBackend(t, nil)
	}
	kp := ca.KeyPair(t, "127.0.0.1")
	return testkit.StartWSBackend(t, &kp)
}

func wsDial(t *testing.T, url string, hc *http.Client) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("websocket dial %s: %v (status %d)", url, err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func echo(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %d bytes: %v", len(msg), err)
	}
	_, got, err := c.Read(ctx)
	if err != nil || string(got) != msg {
		t.Fatalf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
	}
}

// readFails reports whether c is closed under it within 5s (a read fails).
func readFails(c *websocket.Conn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := c.Read(ctx)
	return err != nil && !errors.Is(err, context.DeadlineExceeded)
}

func TestWebSocketThroughProxy(t *testing.T) {
	wb := startWSBackend(t, nil)
	pool := newPool(t, balancer.RoundRobin, wb.Addr)
	up := &Upstream{Pool: pool}
	px := proxyTo(t, up, Options{})
	c := wsDial(t, "ws://"+px.addr+"/chat", nil)
	for _, m := range []string{"hello", strings.Repeat("x", 30<<10), "bye"} {
		echo(t, c, m)
	}
	if xff := <-wb.XFF; xff != "127.0.0.1" {
		t.Errorf("backend saw X-Forwarded-For %q", xff)
	}
	b := pool.Snapshot().Members[0]
	if b.InFlight() != 1 || up.Stats.Tunnels.Load() != 1 || px.Tunnels() != 1 {
		t.Fatalf("open tunnel: in_flight %d, tunnels gauge %d, Tunnels() %d; want 1 each", b.InFlight(), up.Stats.Tunnels.Load(), px.Tunnels())
	}
	// A reload (a new route set, a new Upstream on the same pool) leaves
	// the tunnel alone.
	if err := px.SetRoutes([]Route{{Upstream: &Upstream{Pool: pool, ConnectTimeout: time.Second}}}); err != nil {
		t.Fatal(err)
	}
	echo(t, c, "after reload")
	c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, func() bool { return b.InFlight() == 0 && up.Stats.Tunnels.Load() == 0 && px.Tunnels() == 0 })

	// Plain requests still work on the same listener.
	if resp := do(t, clientFor(px.addr), "GET", "x", "/refuse"); resp.StatusCode() != 403 {
		t.Fatalf("plain GET: %d", resp.StatusCode())
	}
}

// A backend that answers an upgrade with anything but 101 is relayed as a
// normal response, and no tunnel opens.
func TestUpgradeRefusedByBackend(t *testing.T) {
	wb := startWSBackend(t, nil)
	up := &Upstream{Pool: newPool(t, balancer.RoundRobin, wb.Addr)}
	px := proxyTo(t, up, Options{})
	resp := rawUpgrade(t, px.addr, "GET /refuse HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if resp.StatusCode() != 403 || !strings.Contains(string(resp.Body()), "no websockets here") {
		t.Fatalf("got\n%s", resp)
	}
	if px.Tunnels() != 0 || up.Pool.Snapshot().Members[0].InFlight() != 0 {
		t.Fatal("a refused upgrade left a tunnel or an in-flight request")
	}
}

// A backend that answers 101 to another protocol than asked is not
// spliced: 502.
func TestUpgradeWrongProtocol(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"))
		})
	})
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{})
	resp := rawUpgrade(t, px.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp.StatusCode() != 502 {
		t.Fatalf("got\n%s", resp)
	}
}

// rawUpgrade sends an upgrade request on a new connection and reads the one
// answer (the connection stays open when the upgrade is refused, so reading
// to its end would wait for the deadline).
func rawUpgrade(t *testing.T, addr, request string) *fasthttp.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return rawOne(t, c, request)
}

func TestTunnelLimitIdleAndShutdown(t *testing.T) {
	wb := startWSBackend(t, nil)
	up := &Upstream{Pool: newPool(t, balancer.RoundRobin, wb.Addr), TunnelIdle: 300 * time.Millisecond}
	px := proxyTo(t, up, Options{MaxTunnels: 1})
	c := wsDial(t, "ws://"+px.addr+"/", nil)
	echo(t, c, "one")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws://"+px.addr+"/", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("second tunnel over max_tunnels=1: %v, %v; want 503", err, resp)
	}
	// Idle past TunnelIdle: kelpie closes it.
	start := time.Now()
	if !readFails(c) {
		t.Fatal("idle tunnel not closed")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("tunnel closed after %s, before its idle timeout", d)
	}
	waitFor(t, func() bool { return px.Tunnels() == 0 })

	// CloseTunnels closes what is still open once its context ends.
	c2 := wsDial(t, "ws://"+px.addr+"/", nil)
	echo(t, c2, "two")
	sctx, scancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer scancel()
	if err := px.CloseTunnels(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CloseTunnels: %v", err)
	}
	if px.Tunnels() != 0 || !readFails(c2) {
		t.Fatal("CloseTunnels left a tunnel open")
	}
}

// A tunnel holds its backend "draining" until it ends; after TunnelDrain
// kelpie ends it, and the backend becomes drained.
func TestTunnelDrain(t *testing.T) {
	wb := startWSBackend(t, nil)
	pool := newPool(t, balancer.RoundRobin, wb.Addr)
	up := &Upstream{Pool: pool, TunnelDrain: 400 * time.Millisecond}
	px := proxyTo(t, up, Options{})
	c := wsDial(t, "ws://"+px.addr+"/", nil)
	echo(t, c, "before")
	b, err := pool.Drain(wb.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if b.Admin() != balancer.AdminDraining {
		t.Fatalf("admin %v with a tunnel open, want draining", b.Admin())
	}
	echo(t, c, "while draining") // still carried
	// No new tunnel goes to a backend that is not eligible.
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	if _, resp, err := websocket.Dial(dctx, "ws://"+px.addr+"/", nil); err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("upgrade with the only backend drained: %v %v, want 503", err, resp)
	}
	start := time.Now()
	if !readFails(c) {
		t.Fatal("tunnel to a drained backend not closed")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("closed %s after the drain, before tunnel_drain", d)
	}
	waitFor(t, func() bool { return b.Admin() == balancer.AdminDrained })
}

// wss: a TLS listener in front, an HTTPS backend behind.
func TestWebSocketOverTLS(t *testing.T) {
	ca := testkit.NewCA(t)
	wb := startWSBackend(t, ca)
	dir := t.TempDir()
	cp, kp := ca.WritePair(t, dir, "site", "site.test")
	store, err := NewCertStore([]CertFile{{cp, kp}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	up := &Upstream{Pool: newPool(t, balancer.RoundRobin, wb.Addr), TLS: &tls.Config{RootCAs: ca.Pool()}}
	addr := startTLSProxy(t, up, Options{}, ServerTLSConfig(ServerTLSOptions{Certs: store}))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "site.test", RootCAs: ca.Pool()}}}
	c := wsDial(t, "wss://"+addr+"/", hc)
	echo(t, c, "secure")
	echo(t, c, strings.Repeat("y", 30<<10))
}

// TestTunnelCarriesBareLF: once upgraded, the client connection carries
// another protocol, and kelpie's HTTP head scan must not read it as HTTP. A
// WebSocket frame holds a bare LF whenever its masked bytes happen to
// (intermittent EOFs in the WebSocket tests before the scan stopped at the
// upgrade); a raw protocol here sends them every time.
func TestTunnelCarriesBareLF(t *testing.T) {
	c, br := linesTunnel(t, "Upgrade")
	msg := "one\ntwo\n\nGET / HTTP/1.1\nthree\r\n"
	for i := range 3 {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo %d: got %q, %v; want %q", i, got, err, msg)
		}
	}
}

// TestIsUpgradeConnectionList: upgrade anywhere among the Connection options
// asks for an upgrade (RFC 9110 §7.8), beside close too, and across several
// Connection lines; without it, or without an Upgrade header, it does not.
func TestIsUpgradeConnectionList(t *testing.T) {
	for _, tc := range []struct {
		conn string
		want bool
	}{
		{"Connection: Upgrade", true},
		{"Connection: Upgrade, close", true},
		{"Connection: close, upgrade", true},
		{"Connection: keep-alive,Upgrade", true},
		{"Connection: close\r\nConnection: Upgrade", true},
		{"Connection: keep-alive", false},
		{"Connection: close", false},
		{"Connection: upgraded, close", false},
		{"Connection: X-Upgrade", false},
	} {
		var h fasthttp.RequestHeader
		head := "GET / HTTP/1.1\r\nHost: a\r\n" + tc.conn + "\r\nUpgrade: websocket\r\n\r\n"
		if err := h.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
			t.Fatalf("%q: %v", tc.conn, err)
		}
		if got := isUpgrade(&h); got != tc.want {
			t.Errorf("%q: isUpgrade = %v, want %v", tc.conn, got, tc.want)
		}
		h.Del(fasthttp.HeaderUpgrade)
		if isUpgrade(&h) {
			t.Errorf("%q without Upgrade: isUpgrade = true", tc.conn)
		}
	}
}

// TestUpgradeWithConnectionClose: "Connection: Upgrade, close" through kelpie
// reaches the backend as an upgrade, the client gets the 101, and the tunnel
// carries bytes both ways (the close applies to the HTTP connection, which
// the tunnel replaces).
func TestUpgradeWithConnectionClose(t *testing.T) {
	for _, conn := range []string{"Upgrade, close", "close, Upgrade"} {
		t.Run(conn, func(t *testing.T) {
			c, br := linesTunnel(t, conn)
			io.WriteString(c, "ping\n")
			line, err := br.ReadString('\n')
			if err != nil || line != "ping\n" {
				t.Fatalf("echo: %q, %v", line, err)
			}
		})
	}
}

// linesTunnel opens a tunnel through kelpie to a backend that switches to
// "lines" (and echoes) only when asked for that protocol, the request's
// Connection header being conn. It fails t unless the client gets the 101.
func linesTunnel(t *testing.T, conn string) (net.Conn, *bufio.Reader) {
	t.Helper()
	return linesTunnelEarly(t, conn, "")
}

// linesTunnelEarly is linesTunnel with early sent right behind the upgrade
// request, in the same write, before any answer.
func linesTunnelEarly(t *testing.T, conn, early string) (net.Conn, *bufio.Reader) {
	t.Helper()
	be := startRawBackend(t, func(_ *rawBackend, c net.Conn, br *bufio.Reader) {
		var req fasthttp.Request
		if err := req.Read(br); err != nil {
			return
		}
		if string(req.Header.Peek(fasthttp.HeaderUpgrade)) != "lines" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: lines\r\n\r\n")
		io.Copy(c, br) // echo until the client closes
	})
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{})
	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /lines HTTP/1.1\r\nHost: a\r\nConnection: "+conn+"\r\nUpgrade: lines\r\n\r\n"+early)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade with Connection: %s: %v %v", conn, resp, err)
	}
	return c, br
}

// TestTunnelCarriesEarlyBytes: bytes the client sends right behind the
// upgrade request, which fasthttp's reader took in with it, go through the
// tunnel first, and what follows after them (the client side switches to
// pooled raw reads after its first read). CRLF-ended: the head scan reads
// what comes with the upgrade request as HTTP (a bare LF there is refused;
// Noticed in the TLS closing note).
func TestTunnelCarriesEarlyBytes(t *testing.T) {
	c, br := linesTunnelEarly(t, "Upgrade", "early\r\n")
	for _, want := range []string{"early\r\n", "later\n"} {
		if want == "later\n" {
			io.WriteString(c, want)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != want {
			t.Fatalf("echo: %q, %v; want %q", line, err, want)
		}
	}
}

// TestTunnelFirstReadLargerThanBuffer: the client sends more than one copy
// buffer (16 KiB) right behind the upgrade request, within fasthttp's read
// buffer (24 KiB by default), so fasthttp's reader holds all of it when the
// tunnel starts; all of it comes back, in order, and then what follows
// (the client side switches to raw reads after its first read).
func TestTunnelFirstReadLargerThanBuffer(t *testing.T) {
	msg := strings.Repeat("0123456789abcdef", 1300) + "\r\n" // 20,802 bytes, CRLF for the head scan
	c, br := linesTunnelEarly(t, "Upgrade", msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
		t.Fatalf("echo of %d bytes: %v, equal %v", len(msg), err, string(got) == msg)
	}
	io.WriteString(c, "after\n")
	if line, err := br.ReadString('\n'); err != nil || line != "after\n" {
		t.Fatalf("then: %q, %v", line, err)
	}
}
