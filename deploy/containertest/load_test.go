package containertest

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// loadRate is the steady request rate of every scenario, and loadTimeout
// the client's patience: a request slower than that counts as an error.
const (
	loadRate    = 100
	loadTimeout = 10 * time.Second
)

// load sends GETs at a steady rate from a client that never retries, and
// records every outcome. Stop it with stop.
type load struct {
	c    *fasthttp.HostClient
	path string
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	ok      int
	errs    []string
	slowest time.Duration
	by      map[string]int // answers by X-Backend
}

func startLoad(t *testing.T, addr, path string) *load {
	l := &load{
		c: &fasthttp.HostClient{
			Addr:                      addr,
			MaxConns:                  256,
			MaxIdemponentCallAttempts: 1, // never retry: every failure is seen
			RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
			ReadTimeout:               loadTimeout,
			WriteTimeout:              loadTimeout,
		},
		path: path,
		done: make(chan struct{}),
		by:   map[string]int{},
	}
	l.wg.Add(1)
	go l.run()
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *load) run() {
	defer l.wg.Done()
	tick := time.NewTicker(time.Second / loadRate)
	defer tick.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-tick.C:
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.one()
			}()
		}
	}
}

func (l *load) one() {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + l.c.Addr + l.path)
	start := time.Now()
	err := l.c.DoTimeout(req, resp, loadTimeout)
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slowest = max(l.slowest, took)
	switch {
	case err != nil:
		l.errs = append(l.errs, fmt.Sprintf("%s: %v", start.Format("15:04:05.000"), err))
	case resp.StatusCode() != 200:
		l.errs = append(l.errs, fmt.Sprintf("%s: status %d: %s", start.Format("15:04:05.000"), resp.StatusCode(), resp.Body()))
	default:
		l.ok++
		l.by[string(resp.Header.Peek("X-Backend"))]++
	}
}

// stop ends the load, waits for requests in flight and returns a summary.
func (l *load) stop() loadResult {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return loadResult{OK: l.ok, Errors: append([]string(nil), l.errs...), Slowest: l.slowest, By: l.by}
}

// snapshot returns the counts so far without stopping.
func (l *load) snapshot() loadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	by := map[string]int{}
	for k, v := range l.by {
		by[k] = v
	}
	return loadResult{OK: l.ok, Errors: append([]string(nil), l.errs...), Slowest: l.slowest, By: by}
}

type loadResult struct {
	OK      int
	Errors  []string
	Slowest time.Duration
	By      map[string]int
}

func (r loadResult) String() string {
	keys := make([]string, 0, len(r.By))
	for k := range r.By {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var by []string
	for _, k := range keys {
		by = append(by, fmt.Sprintf("%s=%d", k, r.By[k]))
	}
	return fmt.Sprintf("%d ok, %d errors, slowest %s (%s)", r.OK, len(r.Errors), r.Slowest.Round(time.Millisecond), strings.Join(by, " "))
}

// requireNoErrors fails t when any request failed, listing the first few.
func requireNoErrors(t *testing.T, r loadResult) {
	t.Helper()
	if r.OK < loadRate {
		t.Errorf("only %d successful requests: the load did not run", r.OK)
	}
	if len(r.Errors) > 0 {
		n := min(len(r.Errors), 10)
		t.Errorf("%d client-visible errors (want 0); first %d:\n%s", len(r.Errors), n, strings.Join(r.Errors[:n], "\n"))
	}
}
