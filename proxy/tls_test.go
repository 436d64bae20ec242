package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/internal/testkit"
	"github.com/valyala/fasthttp"
)

// startTLSProxy serves a proxy with one catch-all route to up on a TLS
// listener with cfg, and returns its address.
func startTLSProxy(t *testing.T, up *Upstream, o Options, cfg *tls.Config) string {
	t.Helper()
	p, err := New(o, []Route{{Upstream: up}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.ServeTLS(ln, cfg) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	return ln.Addr().String()
}

// tlsGet sends one GET on conn c and returns the response.
func tlsGet(t *testing.T, c net.Conn, host string) *fasthttp.Response {
	t.Helper()
	return rawOne(t, c, "GET /x HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
}

func dialTLSClient(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("tls dial %s (sni %q): %v", addr, cfg.ServerName, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func subject(c *tls.Conn) string { return c.ConnectionState().PeerCertificates[0].Subject.CommonName }

func TestTLSListenerSNIAndForwardedProto(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	ac, ak := ca.WritePair(t, dir, "a", "a.test", "www.a.test")
	bc, bk := ca.WritePair(t, dir, "b", "b.test", "*.b.test")
	store, err := NewCertStore([]CertFile{{ac, ak}, {bc, bk}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var proto string
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		proto = string(ctx.Request.Header.Peek("X-Forwarded-Proto"))
		ctx.WriteString("ok")
	})
	addr := startTLSProxy(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{},
		ServerTLSConfig(ServerTLSOptions{Certs: store}))

	for sni, want := range map[string]string{"a.test": "a.test", "www.a.test": "a.test", "b.test": "b.test",
		"x.b.test": "b.test", "B.TEST": "b.test", "other.test": "a.test", "": "a.test"} {
		c := dialTLSClient(t, addr, &tls.Config{ServerName: sni, RootCAs: ca.Pool(), InsecureSkipVerify: sni == "" || sni == "other.test",
			NextProtos: []string{"h2", "http/1.1"}})
		if got := subject(c); got != want {
			t.Errorf("sni %q: served %q, want %q", sni, got, want)
		}
		if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
			t.Errorf("sni %q: alpn %q, want http/1.1 (no h2)", sni, p)
		}
		if resp := tlsGet(t, c, "a.test"); resp.StatusCode() != 200 || proto != "https" {
			t.Errorf("sni %q: status %d, backend saw X-Forwarded-Proto %q", sni, resp.StatusCode(), proto)
		}
	}
	// TLS 1.1 is refused by default.
	if _, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("a TLS 1.1 handshake succeeded; min_version defaults to 1.2")
	}
}

func TestTLSReloadSwapsCertificatesWithoutDroppingConnections(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	cp, kp := ca.WritePair(t, dir, "site", "site.test")
	logs := &testkit.LogBuffer{}
	store, err := NewCertStore([]CertFile{{cp, kp}}, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	addr := startTLSProxy(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{},
		ServerTLSConfig(ServerTLSOptions{Certs: store}))
	cli := &tls.Config{ServerName: "site.test", RootCAs: ca.Pool()}
	old := dialTLSClient(t, addr, cli)
	oldSerial := old.ConnectionState().PeerCertificates[0].SerialNumber
	tlsGet(t, old, "site.test")

	// A new certificate for the same name: new handshakes get it, the open
	// connection keeps working.
	ca.WritePair(t, dir, "site", "site.test")
	if err := store.Reload(); err != nil {
		t.Fatal(err)
	}
	fresh := dialTLSClient(t, addr, cli)
	if fresh.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(oldSerial) == 0 {
		t.Fatal("a handshake after Reload still got the old certificate")
	}
	if resp := tlsGet(t, old, "site.test"); resp.StatusCode() != 200 {
		t.Fatalf("open connection after reload: %d", resp.StatusCode())
	}
	newSerial := fresh.ConnectionState().PeerCertificates[0].SerialNumber

	// A broken key: Reload fails naming the file, the good certificate
	// stays, and the error is logged once however often it is retried.
	if err := os.WriteFile(kp, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = store.Reload()
	if err == nil || !strings.Contains(err.Error(), kp) {
		t.Fatalf("Reload with a bad key: %v, want an error naming %s", err, kp)
	}
	store.Reload()
	store.checkFiles()
	if n := strings.Count(logs.String(), "not reloaded"); n != 1 {
		t.Errorf("bad certificate logged %d times, want once:\n%s", n, logs)
	}
	if got := dialTLSClient(t, addr, cli).ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(newSerial) != 0 {
		t.Error("a failed reload replaced the certificate in use")
	}
}

// A Kubernetes secret volume holds name -> ..data/name symlinks and swaps
// ..data to a new timestamped directory: Watch's step must see that.
func TestTLSWatchSeesSymlinkSwap(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	v1, v2 := filepath.Join(dir, "..2026_1"), filepath.Join(dir, "..2026_2")
	for _, d := range []string{v1, v2} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		ca.WritePair(t, d, "tls", "site.test")
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..2026_1", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/tls.crt", filepath.Join(dir, "tls.crt")))
	must(os.Symlink("..data/tls.key", filepath.Join(dir, "tls.key")))
	store, err := NewCertStore([]CertFile{{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")}}, nil)
	must(err)
	serial := func() string {
		c, _ := store.GetCertificate(&tls.ClientHelloInfo{ServerName: "site.test"})
		return c.Leaf.SerialNumber.String()
	}
	before := serial()
	store.checkFiles()
	if serial() != before {
		t.Fatal("certificate changed with no change on disk")
	}
	// The atomic swap kubelet does: a new symlink renamed over ..data.
	must(os.Symlink("..2026_2", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	store.checkFiles()
	if serial() == before {
		t.Fatal("Watch's check missed a ..data symlink swap")
	}
}

func TestTLSClientCertificateRequired(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	cp, kp := ca.WritePair(t, dir, "site", "site.test")
	store, err := NewCertStore([]CertFile{{cp, kp}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	addr := startTLSProxy(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{},
		ServerTLSConfig(ServerTLSOptions{Certs: store, ClientCAs: ca.Pool()}))

	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			ServerName: "site.test", RootCAs: ca.Pool(), Certificates: certs}}}
	}
	if resp, err := client().Get("https://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("no client certificate: got %d, want a refused handshake", resp.StatusCode)
	}
	other := testkit.NewCA(t)
	if resp, err := client(other.KeyPair(t, "intruder")).Get("https://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("a client certificate from another CA was accepted")
	}
	resp, err := client(ca.KeyPair(t, "client")).Get("https://" + addr + "/")
	if err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("with a client certificate: %d", resp.StatusCode)
	}
}

func TestHTTPSRedirectOnPlainListener(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	for port, loc := range map[int]string{8443: "https://site.test:8443/a?b=1", 443: "https://site.test/a?b=1"} {
		px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{HTTPSRedirectPort: port})
		resp := raw(t, px.addr, "GET /a?b=1 HTTP/1.1\r\nHost: site.test:8080\r\nConnection: close\r\n\r\n")
		if statusOf(resp) != "HTTP/1.1 308 Permanent Redirect" || !strings.Contains(resp, "\r\nLocation: "+loc+"\r\n") {
			t.Errorf("port %d: got\n%s\nwant 308 to %s", port, resp, loc)
		}
	}
	if n := be.reqs.Load(); n != 0 {
		t.Errorf("backend got %d requests; redirected ones must not be forwarded", n)
	}
}

// An HTTPS backend: verified against the configured CA with the backend's
// host as server name; a backend whose certificate does not verify is a
// failure to connect (502), and nothing of the request reaches it.
func TestHTTPSBackend(t *testing.T) {
	ca := testkit.NewCA(t)
	var gotProto string
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		gotProto = string(ctx.Request.Header.Peek("X-Forwarded-Proto"))
		fmt.Fprintf(ctx, "tls=%v %s", ctx.IsTLS(), ctx.RequestURI())
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.KeyPair(t, "127.0.0.1")}})) //nolint:errcheck // ends at Shutdown
	t.Cleanup(func() { srv.Shutdown() })
	addr := ln.Addr().String()

	up := &Upstream{Pool: newPool(t, balancer.RoundRobin, addr), TLS: &tls.Config{RootCAs: ca.Pool()}}
	px := proxyTo(t, up, Options{})
	c := clientFor(px.addr)
	for range 2 {
		resp := do(t, c, "GET", "app.test", "/p?q=1")
		if resp.StatusCode() != 200 || string(resp.Body()) != "tls=true /p?q=1" || gotProto != "http" {
			t.Fatalf("got %d %q (X-Forwarded-Proto %q)", resp.StatusCode(), resp.Body(), gotProto)
		}
	}

	wrong := &Upstream{Pool: newPool(t, balancer.RoundRobin, addr), TLS: &tls.Config{RootCAs: x509.NewCertPool()}}
	px2 := proxyTo(t, wrong, Options{})
	if resp := do(t, clientFor(px2.addr), "GET", "app.test", "/"); resp.StatusCode() != 502 {
		t.Fatalf("backend certificate from an unknown CA: got %d, want 502", resp.StatusCode())
	}
	plain := &Upstream{Pool: newPool(t, balancer.RoundRobin, addr)}
	px3 := proxyTo(t, plain, Options{})
	if resp := do(t, clientFor(px3.addr), "GET", "app.test", "/"); resp.StatusCode() == 200 {
		t.Fatal("plain HTTP to a TLS backend answered 200")
	}
}

// TestTLSSocketIOMode: beneath TLS, raw I/O reads and writes the socket
// with raw system calls (rawSocket), std I/O leaves it net.Conn's, and
// either way the TLS stream and its deadlines work.
func TestTLSSocketIOMode(t *testing.T) {
	ca := testkit.NewCA(t)
	kp := ca.KeyPair(t, "a.test")
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}}
	for _, raw := range []bool{true, false} {
		t.Run(fmt.Sprintf("raw=%v", raw), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "a.test", RootCAs: ca.Pool()})
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 4)
				c.Write([]byte("ping"))
				c.Read(buf)
				c.Read(buf) // until the server closes
			}()
			c, err := tlsListener{listener{ln, raw}, cfg}.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tc := c.(*tlsClientConn).tc
			if _, isRaw := tc.NetConn().(rawSocket); isRaw != raw {
				t.Fatalf("socket beneath TLS is %T, want raw %v", tc.NetConn(), raw)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("read %q, %v", buf[:n], err)
			}
			if _, err := c.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			// A read deadline still ends a read that gets nothing.
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past the deadline: %v, want a timeout", err)
			}
		})
	}
}
