package proxy

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// trickleBackend answers every request with a 50-byte body sent in five
// pieces, waiting gap before each piece; with stallAfter > 0 it sends that
// many pieces and then stops sending without closing.
func trickleBackend(t *testing.T, gap time.Duration, stallAfter int) string {
	t.Helper()
	done := make(chan struct{})
	s := testkit.StartRaw(t, func(_ *testkit.RawServer, c net.Conn, r *bufio.Reader) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line != "\r\n" {
				continue // still in the request head
			}
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"))
			for i := range 5 {
				if stallAfter > 0 && i == stallAfter {
					<-done
					return
				}
				select {
				case <-time.After(gap):
				case <-done:
					return
				}
				c.Write([]byte(strings.Repeat("x", 10)))
			}
		}
	})
	t.Cleanup(func() { close(done) }) // before the raw server's cleanup waits for this handler
	return s.Addr
}

// TestResponseTimeoutBoundsEachGap: timeouts.response bounds the wait for
// the response head and then each gap in the body, never the whole body: a
// slow but live download completes, a stalled one is cut after about one
// timeout.
func TestResponseTimeoutBoundsEachGap(t *testing.T) {
	const timeout = 300 * time.Millisecond
	run := func(addr string) (string, error, time.Duration) {
		px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, addr), ResponseTimeout: timeout}, Options{})
		c := clientFor(px.addr)
		c.ReadTimeout = 5 * time.Second
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://a/")
		start := time.Now()
		err := c.Do(req, resp)
		return string(resp.Body()), err, time.Since(start)
	}

	// Five gaps of 60% of the timeout: 5x longer than one timeout in all.
	body, err, took := run(trickleBackend(t, timeout*6/10, 0))
	if err != nil || body != strings.Repeat("x", 50) {
		t.Fatalf("slow download: body %d bytes, err %v after %s; want all 50 bytes", len(body), err, took)
	}
	if took < 5*timeout*6/10 {
		t.Fatalf("slow download finished in %s: the backend did not trickle", took)
	}

	// Two pieces, then silence: the client must not wait forever.
	body, err, took = run(trickleBackend(t, 10*time.Millisecond, 2))
	if err == nil && len(body) == 50 {
		t.Fatalf("stalled download delivered a whole body %q", body)
	}
	if took > 4*timeout {
		t.Fatalf("stalled download held the client %s; want about %s", took, timeout)
	}
}
