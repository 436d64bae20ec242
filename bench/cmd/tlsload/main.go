// Command tlsload measures a TLS proxy on loopback for bench/tls.sh: TLS
// handshakes per second with a new connection per request (-mode
// handshake), or requests per second on keep-alive connections (-mode
// keepalive), and the proxy's CPU time per request (-pid: the proxy's
// process, whose direct children are counted too, for nginx's workers).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/bench/internal/proc"
)

func main() {
	addr := flag.String("addr", "", "proxy TLS address host:port")
	sni := flag.String("sni", "bench.test", "server name")
	caFile := flag.String("ca", "", "PEM CA that signed the proxy's certificate")
	mode := flag.String("mode", "handshake", "handshake | keepalive")
	dur := flag.Duration("d", 5*time.Second, "duration")
	conc := flag.Int("c", 8, "concurrent clients")
	pid := flag.Int("pid", 0, "proxy process id for CPU accounting (0: none)")
	flag.Parse()

	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fail(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	// X25519 alone: Go offers the X25519MLKEM768 hybrid first, which
	// Debian's OpenSSL (HAProxy, nginx) does not know, so kelpie alone would
	// pay for it. No session cache: every handshake is a full one.
	cfg := &tls.Config{ServerName: *sni, RootCAs: pool, ClientSessionCache: nil, CurvePreferences: []tls.CurveID{tls.X25519}}
	suite, err := negotiated(*addr, cfg)
	if err != nil {
		fail(err)
	}

	var ok, bad atomic.Int64
	stop := time.Now().Add(*dur)
	cpu0 := proc.CPUTicks(*pid)
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			if *mode == "keepalive" {
				c := &fasthttp.HostClient{Addr: *addr, IsTLS: true, TLSConfig: cfg, MaxConns: 1}
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI("https://" + *sni + "/")
				for time.Now().Before(stop) {
					if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						bad.Add(1)
						continue
					}
					ok.Add(1)
				}
				return
			}
			buf := make([]byte, 4096)
			req := []byte("GET / HTTP/1.1\r\nHost: " + *sni + "\r\nConnection: close\r\n\r\n")
			for time.Now().Before(stop) {
				c, err := tls.Dial("tcp", *addr, cfg)
				if err != nil {
					bad.Add(1)
					continue
				}
				_, err = c.Write(req)
				n, rerr := c.Read(buf)
				c.Close()
				if err != nil || rerr != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
					bad.Add(1)
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	cpu := float64(proc.CPUTicks(*pid)-cpu0) / proc.TicksPerSecond
	n := float64(ok.Load())
	fmt.Printf("mode=%s ok=%d errors=%d per_s=%.0f cpu_s=%.2f cpu_us_per_req=%.1f suite=%s\n",
		*mode, ok.Load(), bad.Load(), n/el, cpu, cpu*1e6/max(n, 1), suite)
}

// negotiated is the TLS version, cipher suite and key exchange the proxy
// agrees to, e.g. "TLS1.3/TLS_AES_128_GCM_SHA256/X25519".
func negotiated(addr string, cfg *tls.Config) (string, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	st := c.ConnectionState()
	v := strings.ReplaceAll(tls.VersionName(st.Version), " ", "") // one field of a raw line
	return v + "/" + tls.CipherSuiteName(st.CipherSuite) + "/" + st.CurveID.String(), nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlsload:", err)
	os.Exit(1)
}
