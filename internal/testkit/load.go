package testkit

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// LoadOptions shapes one load run: Workers goroutines each sending Requests
// requests (or fewer, once Stop is called). The hooks get the worker's
// number w and the request's number i within that worker.
type LoadOptions struct {
	Workers, Requests int
	Path              func(w, i int) string         // default "/load"
	Method            func(w, i int) string         // default GET
	Body              func(w, i int) string         // default none
	Between           func(w, i int)                // after each request: pacing
	Want              func(code int, b []byte) bool // a success; default: 200 with a body
}

// Load is a running or finished load: counts, the first errors, latencies.
type Load struct {
	ok, failed atomic.Int64
	stopped    atomic.Bool
	wg         sync.WaitGroup
	hc         *fasthttp.HostClient

	mu   sync.Mutex
	errs []string
	lat  []time.Duration
}

// maxErrs is how many failures a Load remembers in full.
const maxErrs = 5

// StartLoad runs o against the HTTP server at addr with a client that never
// retries and reuses its connections, so every failure is seen.
func StartLoad(addr string, o LoadOptions) *Load {
	l := &Load{hc: &fasthttp.HostClient{
		Addr: addr, MaxConns: o.Workers, ReadTimeout: 10 * time.Second, WriteTimeout: 5 * time.Second,
		MaxIdleConnDuration:       time.Second,
		MaxIdemponentCallAttempts: 1,
		RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}}
	if o.Want == nil {
		o.Want = func(code int, b []byte) bool { return code == 200 && len(b) > 0 }
	}
	for w := range o.Workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.worker(addr, o, w)
		}()
	}
	return l
}

func (l *Load) worker(addr string, o LoadOptions, w int) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	lat := make([]time.Duration, 0, min(o.Requests, 1<<16))
	defer func() { l.mu.Lock(); l.lat = append(l.lat, lat...); l.mu.Unlock() }()
	for i := 0; i < o.Requests && !l.stopped.Load(); i++ {
		req.Reset()
		resp.Reset()
		path, method := "/load", "GET"
		if o.Path != nil {
			path = o.Path(w, i)
		}
		if o.Method != nil {
			method = o.Method(w, i)
		}
		req.SetRequestURI("http://" + addr + path)
		req.Header.SetMethod(method)
		if o.Body != nil {
			req.SetBodyString(o.Body(w, i))
		}
		start := time.Now()
		err := l.hc.Do(req, resp)
		lat = append(lat, time.Since(start))
		if err != nil || !o.Want(resp.StatusCode(), resp.Body()) {
			l.failed.Add(1)
			l.mu.Lock()
			if len(l.errs) < maxErrs {
				l.errs = append(l.errs, fmt.Sprintf("%s %s: %d %.60q %v", method, path, resp.StatusCode(), resp.Body(), err))
			}
			l.mu.Unlock()
		} else {
			l.ok.Add(1)
		}
		if o.Between != nil {
			o.Between(w, i)
		}
	}
}

// Stop asks every worker to finish its current request and waits for them.
func (l *Load) Stop() *Load { l.stopped.Store(true); return l.Wait() }

// Wait waits for the workers to finish and closes the client's connections.
func (l *Load) Wait() *Load {
	l.wg.Wait()
	l.hc.CloseIdleConnections()
	return l
}

// OK is how many requests have succeeded so far.
func (l *Load) OK() int64 { return l.ok.Load() }

// Failed is how many requests have failed so far.
func (l *Load) Failed() int64 { return l.failed.Load() }

// Total is how many requests have finished so far.
func (l *Load) Total() int64 { return l.ok.Load() + l.failed.Load() }

// Errors returns the first few failures, described.
func (l *Load) Errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// Quantile returns the q-quantile (0 to 1) of the latencies of finished
// workers: call it after Wait or Stop.
func (l *Load) Quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lat) == 0 {
		return 0
	}
	slices.Sort(l.lat)
	return l.lat[min(int(q*float64(len(l.lat))), len(l.lat)-1)]
}

// String summarises the run for a log line.
func (l *Load) String() string {
	return fmt.Sprintf("%d requests, %d errors (first: %v), p50 %s p99 %s max %s",
		l.Total(), l.Failed(), l.Errors(), l.Quantile(0.5), l.Quantile(0.99), l.Quantile(1))
}
