// Command tlsload measures a TLS proxy on loopback for bench/tls.sh: TLS
// handshakes per second with a new connection per request (-mode
// handshake), or requests per second on keep-alive connections (-mode
// keepalive), and the proxy's CPU time per request (-pid: the proxy's
// process, whose direct children are counted too, for nginx's workers).
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
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
	cfg := &tls.Config{ServerName: *sni, RootCAs: pool, ClientSessionCache: nil}

	var ok, bad atomic.Int64
	stop := time.Now().Add(*dur)
	cpu0 := cpuTicks(*pid)
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
	cpu := float64(cpuTicks(*pid)-cpu0) / 100 // USER_HZ
	n := float64(ok.Load())
	fmt.Printf("mode=%s ok=%d errors=%d per_s=%.0f cpu_s=%.2f cpu_us_per_req=%.1f\n",
		*mode, ok.Load(), bad.Load(), n/el, cpu, cpu*1e6/max(n, 1))
}

// cpuTicks is utime+stime of pid and its direct children, in clock ticks.
func cpuTicks(pid int) int64 {
	if pid == 0 {
		return 0
	}
	total := procTicks(strconv.Itoa(pid))
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		f, err := os.Open(s)
		if err != nil {
			continue
		}
		line, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		fields := strings.Fields(line[strings.LastIndexByte(line, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			total += procTicks(filepath.Base(filepath.Dir(s)))
		}
	}
	return total
}

func procTicks(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	k, _ := strconv.ParseInt(fields[12], 10, 64)
	return u + k
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlsload:", err)
	os.Exit(1)
}
