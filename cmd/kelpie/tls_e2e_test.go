package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// TestTLSEndToEnd runs kelpie from a config with a TLS listener (SNI over
// two certificates, plain listener redirecting), an HTTPS upstream probed
// over TLS, and a certificate rotated by SIGHUP's reload while a client
// connection stays open.
func TestTLSEndToEnd(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	siteCrt, siteKey := ca.WritePair(t, dir, "site", "site.test")
	otherCrt, otherKey := ca.WritePair(t, dir, "other", "other.test")
	caFile := ca.WriteCA(t, dir)

	var proto string
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/health" {
			proto = string(ctx.Request.Header.Peek("X-Forwarded-Proto"))
		}
		fmt.Fprintf(ctx, "secure backend tls=%v", ctx.IsTLS())
	}}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(tls.NewListener(bln, &tls.Config{Certificates: []tls.Certificate{ca.KeyPair(t, "backend.internal")}})) //nolint:errcheck // ends at Shutdown
	t.Cleanup(func() { srv.Shutdown() })

	tlsAddr := testkit.FreeAddr(t)
	ta := startApp(t, fmt.Sprintf(`
tls:
  listen: %q
  redirect_http: true
  certificates:
    - {cert: %q, key: %q}
    - {cert: %q, key: %q}
upstreams:
  - name: web
    backends:
      - address: %q
    tls:
      ca: %q
      server_name: backend.internal
    health:
      active: {path: /health, interval: 500ms, timeout: 500ms, rise: 1, fall: 3} # a TLS handshake under -race on a loaded machine can take 100+ ms
`, tlsAddr, siteCrt, siteKey, otherCrt, otherKey, bln.Addr().String(), caFile))

	eventually(t, 5*time.Second, "backend healthy through an HTTPS probe", func() bool {
		return ta.Upstreams(t).Upstreams[0].Backends[0].Health == "healthy"
	})
	client := func(sni string) (*http.Client, *[]string) {
		var served []string
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			ServerName: sni, RootCAs: ca.Pool(),
			VerifyConnection: func(cs tls.ConnectionState) error {
				served = append(served, cs.PeerCertificates[0].SerialNumber.String())
				return nil
			}}}}, &served
	}
	get := func(c *http.Client) string {
		t.Helper()
		resp, err := c.Get("https://" + tlsAddr + "/x")
		if err != nil {
			t.Fatalf("GET over TLS: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET over TLS: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	site, siteSerials := client("site.test")
	if body := get(site); body != "secure backend tls=true" || proto != "https" {
		t.Fatalf("got %q, backend saw X-Forwarded-Proto %q", body, proto)
	}
	other, _ := client("other.test")
	get(other) // verifies only if other.test's certificate is served

	// The plain listener redirects.
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).
		Get("http://" + ta.ProxyAddr + "/a?b=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, port, _ := net.SplitHostPort(tlsAddr)
	if want := "https://127.0.0.1:" + port + "/a?b=1"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Fatalf("plain listener: %d Location %q, want 308 %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// Rotate site.test's certificate; SIGHUP's reload serves it to new
	// connections while the open keep-alive one carries on.
	ca.WritePair(t, dir, "site", "site.test")
	if err := ta.reload(); err != nil {
		t.Fatal(err)
	}
	get(site) // the pooled connection: no new handshake
	if len(*siteSerials) != 1 {
		t.Fatalf("the keep-alive connection was dropped by the reload (%d handshakes)", len(*siteSerials))
	}
	fresh, freshSerials := client("site.test")
	get(fresh)
	if (*freshSerials)[0] == (*siteSerials)[0] {
		t.Fatal("after the reload a new connection still got the old certificate")
	}
	// A broken key on reload: the running certificate stays, logged.
	if err := os.WriteFile(siteKey, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = ta.reload()
	again, againSerials := client("site.test")
	get(again)
	if (*againSerials)[0] != (*freshSerials)[0] {
		t.Fatal("a broken certificate file replaced the running certificate")
	}
	ta.Logs.WaitFor(t, siteKey, time.Second)
}

// kelpie check names a broken certificate or key file and the reason.
func TestCheckNamesBadCertificate(t *testing.T) {
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	crt, key := ca.WritePair(t, dir, "site", "site.test")
	if err := os.WriteFile(key, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope.pem")
	path := filepath.Join(dir, "kelpie.yaml")
	cfg := fmt.Sprintf(`
tls:
  listen: "127.0.0.1:8443"
  min_version: "1.1"
  certificates:
    - {cert: %q, key: %q}
upstreams:
  - name: web
    backends: [{address: "127.0.0.1:9001"}]
    tls: {ca: %q}
`, crt, key, missing)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", "-config", path}, &stdout, &stderr); code != 1 {
		t.Fatalf("check exit %d, want 1\n%s", code, stderr.String())
	}
	out := stderr.String() + stdout.String()
	for _, want := range []string{key, "min_version \"1.1\"", missing} {
		if !strings.Contains(out, want) {
			t.Errorf("check output does not name %q:\n%s", want, out)
		}
	}
}
