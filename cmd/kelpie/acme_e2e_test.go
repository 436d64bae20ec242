package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/discovery/consultest"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// pebble is a running Pebble ACME server on loopback.
type pebble struct {
	dir   string         // the directory URL
	roots *x509.CertPool // Pebble's issuing roots, for checking what kelpie serves
	ca    string         // PEM file trusted for Pebble's own HTTPS
}

// startPebble runs Pebble, validating tls-alpn-01 challenges on tlsPort and
// issuing certificates valid for validity, until the test ends.
func startPebble(t *testing.T, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	bin := testkit.PebbleBinary(t)
	ca := testkit.NewCA(t)
	dir := t.TempDir()
	crt, key := ca.WritePair(t, dir, "pebble", "127.0.0.1", "localhost")
	listen, mgmt := testkit.FreeAddr(t), testkit.FreeAddr(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": crt, "privateKey": key,
		"httpPort": testkit.FreePort(t), "tlsPort": tlsPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter": map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{
			"description": "short-lived, to see renewals", "validityPeriod": int(validity.Seconds())}},
	}}
	b, _ := json.Marshal(conf)
	confPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out testkit.LogBuffer
	// Pebble resolves the domains it validates through its companion DNS
	// server, which answers 127.0.0.1 for every name.
	dnsAddr := testkit.FreeAddr(t)
	dns := exec.Command(filepath.Join(filepath.Dir(bin), "pebble-challtestsrv-"+testkit.PebbleVersion),
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dnsserver", dnsAddr, "-doh", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-management", testkit.FreeAddr(t))
	dns.Stdout, dns.Stderr = &out, &out
	if err := dns.Start(); err != nil {
		t.Fatalf("start pebble-challtestsrv: %v", err)
	}
	t.Cleanup(func() {
		_ = dns.Process.Kill() // by PID: the process this test started
		_ = dns.Wait()
	})
	cmd := exec.Command(bin, "-config", confPath, "-dnsserver", dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID: the process this test started
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble output:\n%s", out.String())
		}
	})
	p := &pebble{dir: "https://" + listen + "/dir", ca: ca.WriteCA(t, dir)}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	eventually(t, 20*time.Second, "pebble's directory", func() bool {
		resp, err := hc.Get(p.dir)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err := hc.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pemRoot, _ := io.ReadAll(resp.Body)
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(pemRoot) {
		t.Fatalf("pebble root: %q", pemRoot)
	}
	return p
}

// served is the certificate addr presents for kelpie.test, verified
// against Pebble's root; nil when there is none yet.
func (p *pebble) served(addr string) *x509.Certificate {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: "kelpie.test", RootCAs: p.roots})
	if err != nil {
		return nil
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestACMEWithPebble: kelpie obtains a certificate for its domain from a
// real ACME server (Pebble) through tls-alpn-01 on its own TLS listener,
// serves it, and renews it before it expires.
func TestACMEWithPebble(t *testing.T) {
	tlsAddr := testkit.FreeAddr(t)
	_, portStr, _ := net.SplitHostPort(tlsAddr)
	var port int
	fmt.Sscan(portStr, &port)
	peb := startPebble(t, port, 24*time.Second)
	be := startBackend(t, named("behind acme"))
	cache := t.TempDir()
	ta := startApp(t, fmt.Sprintf(`
tls:
  listen: %q
  acme:
    email: ops@example.com
    domains: [kelpie.test]
    directory: %q
    cache: %q
    ca: %q
upstreams:
  - name: web
    backends:
%s`, tlsAddr, peb.dir, cache, peb.ca, yamlBackends(be.Addr)))

	served := func() *x509.Certificate { return peb.served(tlsAddr) }
	var first *x509.Certificate
	eventually(t, 60*time.Second, "a certificate from Pebble, verified against its root", func() bool {
		first = served()
		return first != nil
	})
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: peb.roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, tlsAddr) // kelpie.test is kelpie
		}}}
	resp, err := hc.Get("https://kelpie.test:" + portStr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "behind acme" {
		t.Fatalf("through the ACME certificate: %d %q", resp.StatusCode, body)
	}
	if entries, _ := os.ReadDir(cache); len(entries) < 2 {
		t.Errorf("acme cache holds %d entries, want the account key and the certificate", len(entries))
	}
	t.Logf("first certificate: serial %s, valid until %s", first.SerialNumber, first.NotAfter.Format(time.TimeOnly))

	// Renewal: autocert renews a third of the lifetime before expiry.
	eventually(t, 45*time.Second, "a renewed certificate", func() bool {
		c := served()
		return c != nil && c.SerialNumber.Cmp(first.SerialNumber) != 0 && c.NotAfter.After(first.NotAfter)
	})
	if strings.Contains(ta.Logs.String(), "certificate not obtained") {
		t.Logf("kelpie log:\n%s", ta.Logs.String())
	}
}

// TestACMEPairSharesConsulCache: two kelpies of an HA pair with
// tls.acme.cache in the same Consul KV prefix start together; one orders a
// certificate from Pebble and both serve that one (the same serial), the
// other never orders its own. The CA's tls-alpn-01 check reaches only the
// first (as a VIP would), so the shared cache must carry the challenge too
// whichever kelpie ordered.
func TestACMEPairSharesConsulCache(t *testing.T) {
	agent := consultest.Start(t)
	addrA := testkit.FreeAddr(t)
	_, portStr, _ := net.SplitHostPort(addrA)
	var port int
	fmt.Sscan(portStr, &port)
	addrB := net.JoinHostPort("127.0.0.2", portStr)
	peb := startPebble(t, port, time.Hour)
	be := startBackend(t, named("behind the pair"))
	const prefix = "kelpie/acme-pair-test"
	conf := func(listen string) string {
		return fmt.Sprintf(`
consul:
  address: %q
tls:
  listen: %q
  acme:
    domains: [kelpie.test]
    directory: %q
    cache: "consul://%s"
    ca: %q
upstreams:
  - name: web
    backends:
%s`, agent.HTTPAddr, listen, peb.dir, prefix, peb.ca, yamlBackends(be.Addr))
	}
	startApp(t, conf(addrA))
	startApp(t, conf(addrB))

	var a, b *x509.Certificate
	eventually(t, 60*time.Second, "both kelpies serving a certificate from Pebble", func() bool {
		a, b = peb.served(addrA), peb.served(addrB)
		return a != nil && b != nil
	})
	if a.SerialNumber.Cmp(b.SerialNumber) != 0 {
		t.Fatalf("the pair serves two certificates (serials %s and %s): both ordered", a.SerialNumber, b.SerialNumber)
	}
	p, _, err := agent.Client.KV().Get(prefix+"/kelpie.test", nil)
	if err != nil || p == nil {
		t.Fatalf("no certificate under %s in Consul KV: %v", prefix, err)
	}
	if locks, _, _ := agent.Client.KV().Keys(prefix+"/.lock/", "", nil); len(locks) > 0 {
		for _, k := range locks {
			if kp, _, _ := agent.Client.KV().Get(k, nil); kp != nil && kp.Session != "" {
				t.Errorf("lock %s still held by session %s after the order", k, kp.Session)
			}
		}
	}
}
