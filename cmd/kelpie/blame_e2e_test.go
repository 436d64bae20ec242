package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hostileRequest is one broken request from a client: bytes to send, then
// how the client leaves.
type hostileRequest struct {
	name string
	send string
	end  string // "close", "half-close" (then read the answer), "reset", "stall" (read the answer)
}

func hostileFlood() []hostileRequest {
	const big = 160 << 10
	chunked := "POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
	cl := func(n int) string {
		return fmt.Sprintf("POST /up HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n", n)
	}
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 16<<10, strings.Repeat("c", 16<<10))
	kinds := []struct {
		hostileRequest
		n int
	}{
		{hostileRequest{"abandoned Content-Length upload beyond the prefetch", cl(big) + strings.Repeat("u", 70<<10), "close"}, 60},
		{hostileRequest{"abandoned Content-Length upload within the prefetch", cl(4000) + strings.Repeat("u", 1000), "close"}, 20},
		{hostileRequest{"abandoned chunked upload at a chunk boundary", chunked + strings.Repeat(chunk, 5), "close"}, 60},
		{hostileRequest{"chunked upload half-closed after 0 CRLF", chunked + chunk + "0\r\n", "half-close"}, 60},
		{hostileRequest{"chunked upload reset inside a chunk", chunked + chunk + "4000\r\nabc", "reset"}, 40},
		{hostileRequest{"stalled chunked upload", chunked + strings.Repeat(chunk, 2), "stall"}, 20},
		// (An HTTP/1.0 request without Host was here; it is forwarded now,
		// as HTTP/1.1 with kelpie's address as Host, so it is no fault.)
		{hostileRequest{"request head with bare LFs", "GET /x HTTP/1.1\nHost: app\n\n", "half-close"}, 60},
	}
	var all []hostileRequest
	for i := 0; ; i++ { // interleaved, so every backend meets every kind
		added := false
		for _, k := range kinds {
			if i < k.n {
				all = append(all, k.hostileRequest)
				added = true
			}
		}
		if !added {
			return all
		}
	}
}

// closeWaits counts the sockets on addr's local port in CLOSE_WAIT: the
// peer has closed, the local side (kelpie) not yet.
func closeWaits(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf(":%04X", p)
	n := 0
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], local) && f[3] == "08" { // st 08: CLOSE_WAIT
			n++
		}
	}
	return n
}

func sendHostile(addr string, h hostileRequest) (answer string, err error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, h.send); err != nil {
		return "", err
	}
	switch h.end {
	case "reset":
		_ = c.(*net.TCPConn).SetLinger(0)
		return "", nil
	case "half-close":
		_ = c.(*net.TCPConn).CloseWrite()
	case "close":
		return "", nil
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestClientFaultsNeverBlameBackends: hundreds of broken requests from one
// client (abandoned and truncated uploads, both framings, resets, stalls,
// requests fasthttp refuses to send) leave every backend eligible with
// nothing counted against it by the real health layer (passive ejection,
// breaker) or the counters, while a well-behaved client keeps getting 200s.
func TestClientFaultsNeverBlameBackends(t *testing.T) {
	var addrs []string
	for i := range 4 {
		addrs = append(addrs, startBackend(t, named(fmt.Sprint("b", i))).Addr)
	}
	// Thresholds low enough that a handful of leaked failures would eject
	// or trip every backend.
	ta := startApp(t, fmt.Sprintf(`
limits:
  read_timeout: 1s
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1}
    health:
      active: {path: /health, interval: 200ms, timeout: 150ms}
      passive: {consecutive_failures: 3, ejection: 30s, max_ejected_percent: 100}
      breaker: {enabled: true, failure_ratio: 0.2, min_requests: 5, window: 10s, open_timeout: 30s}
`, yamlBackends(addrs...)))

	stop := make(chan struct{})
	var good, bad atomic.Int64
	var goodDone sync.WaitGroup
	goodDone.Add(1)
	go func() { // the well-behaved client, throughout the flood
		defer goodDone.Done()
		tick := time.NewTicker(2 * time.Millisecond) // a steady client, not a busy loop
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if code, _ := ta.Get(t, "/ok"); code == 200 {
				good.Add(1)
			} else {
				bad.Add(1)
			}
		}
	}()

	flood := hostileFlood()
	statuses := map[string]map[string]int{} // kind -> status line -> count
	var mu sync.Mutex
	work := make(chan hostileRequest)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range work {
				answer, _ := sendHostile(ta.ProxyAddr, h)
				line, _, _ := strings.Cut(answer, "\r\n")
				mu.Lock()
				if statuses[h.name] == nil {
					statuses[h.name] = map[string]int{}
				}
				statuses[h.name][line]++
				mu.Unlock()
			}
		}()
	}
	for _, h := range flood {
		work <- h
	}
	close(work)
	wg.Wait()
	// A client that closed leaves kelpie's end in CLOSE_WAIT until kelpie
	// is done with its request and closes it too.
	eventually(t, 10*time.Second, "kelpie done with every hostile connection", func() bool {
		return closeWaits(t, ta.ProxyAddr) == 0
	})
	for range 20 { // and after it
		if code, _ := ta.Get(t, "/ok"); code == 200 {
			good.Add(1)
		} else {
			bad.Add(1)
		}
	}
	close(stop)
	goodDone.Wait()

	t.Logf("%d hostile requests; the good client got %d 200s and %d errors", len(flood), good.Load(), bad.Load())
	for kind, s := range statuses {
		t.Logf("  %s: %v", kind, s)
	}
	if bad.Load() != 0 {
		t.Errorf("the well-behaved client got %d errors", bad.Load())
	}
	for kind, want := range map[string]string{
		"chunked upload half-closed after 0 CRLF": "HTTP/1.1 400 Bad Request",
		"stalled chunked upload":                  "HTTP/1.1 408 Request Timeout",
		"request head with bare LFs":              "HTTP/1.1 400 Bad Request",
	} {
		if len(statuses[kind]) != 1 || statuses[kind][want] == 0 {
			t.Errorf("%s: clients got %v, want all %q", kind, statuses[kind], want)
		}
	}
	var requests uint64
	for _, b := range ta.Upstreams(t).Upstreams[0].Backends {
		requests += b.Requests
		if !b.Eligible || b.Ejected || b.Breaker != "closed" || b.Failures != 0 {
			t.Errorf("backend %s: eligible=%v ejected=%v breaker=%s failures=%d, want eligible, not ejected, closed, 0",
				b.Address, b.Eligible, b.Ejected, b.Breaker, b.Failures)
		}
	}
	if requests != uint64(good.Load()) {
		t.Errorf("backends counted %d requests, want the good client's %d only", requests, good.Load())
	}
}
