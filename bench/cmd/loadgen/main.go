// Command loadgen is an open-loop, fixed-rate HTTP/1.1 load generator for the
// side-by-side benchmark (what wrk2 -R does, which Debian does not package).
//
// Request i is due at start + i/rate whether or not earlier requests have been
// answered, and its latency is measured from that intended send time, not from
// when a connection became free. A proxy that stalls therefore shows the stall
// in every request that queued behind it, instead of hiding it the way a
// closed-loop tool does (coordinated omission).
//
// Requests due during -warmup are sent but not recorded. With -pids, loadgen
// reads those processes' CPU time (utime+stime from /proc/PID/stat) at the
// start and end of the measured window and reports CPU microseconds per
// completed request.
//
// Output is one line of key=value pairs per target:
//
//	rate=... rps=... n=... errors=... late=... p50_us=... p90_us=... p99_us=... p999_us=... max_us=... lag_p99_us=... cpu_us_req=... cpu_pct=...
//
// -url may be repeated (with one -pids per -url, matched by position) for a
// paired run: every target gets the same schedule at -rate, request i going
// to each target at the same intended time (which target is sent first
// alternates), each with its own connections, and one output line per target
// in -url order. On a noisy machine this is the way to compare two proxies'
// tails: a stall of the generator's CPU or of the host delays both streams
// alike, where in runs one after the other it lands on whichever ran then.
//
// lag_p99_us is how late the generator itself got requests onto a connection
// (time from the intended send to the send, which includes waiting for a free
// connection); if it is large while the proxy's CPU is low, the generator's
// CPU, not the proxy, was the bottleneck.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/bench/internal/proc"
)

func main() {
	var urls, pidLists listFlag
	flag.Var(&urls, "url", "target URL, e.g. http://127.0.0.1:18080/; repeat for a paired run (each target gets -rate)")
	rate := flag.Float64("rate", 1000, "requests per second to send to each target")
	duration := flag.Duration("duration", 10*time.Second, "measured window")
	warmup := flag.Duration("warmup", 2*time.Second, "unrecorded warm-up before the window")
	conns := flag.Int("conns", 128, "maximum connections (and sending goroutines) per target")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout; a timed-out request counts as an error at its full latency")
	flag.Var(&pidLists, "pids", "comma-separated PIDs whose CPU time is measured over the window; one -pids per -url, in order")
	cpuprofile := flag.String("cpuprofile", "", "write loadgen's own CPU profile here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if len(urls) == 0 || *rate <= 0 {
		log.Fatal("loadgen: -url and a positive -rate are required")
	}
	if len(pidLists) > len(urls) {
		log.Fatalf("loadgen: %d -pids for %d -url; give at most one -pids per -url", len(pidLists), len(urls))
	}

	targets := make([]*target, len(urls))
	for i, u := range urls {
		var pids []int
		if i < len(pidLists) {
			pids = parsePIDs(pidLists[i])
		}
		t, err := newTarget(u, *conns, *timeout, pids)
		if err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		targets[i] = t
	}
	r := run{interval: time.Duration(float64(time.Second) / *rate), timeout: *timeout}
	r.do(*warmup, *duration, *conns, targets)

	for _, t := range targets {
		res := &t.res
		fmt.Printf("rate=%.0f rps=%.1f n=%d errors=%d late=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f lag_p99_us=%.1f cpu_us_req=%s cpu_pct=%s\n",
			*rate, float64(res.h.total-res.errors)/duration.Seconds(), res.h.total, res.errors, res.late,
			us(res.h.quantile(0.50)), us(res.h.quantile(0.90)), us(res.h.quantile(0.99)), us(res.h.quantile(0.999)), us(res.h.max),
			us(res.lag.quantile(0.99)), res.cpuPerReq, res.cpuPct)
	}
}

// listFlag is a flag that may be given more than once.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type run struct {
	interval time.Duration
	timeout  time.Duration
}

// target is one URL under load: its own connections, schedule queue and results.
type target struct {
	url      string
	hc       *fasthttp.HostClient
	pids     []int
	due      chan time.Duration
	inWindow atomic.Int64
	cpu0     float64
	res      result
}

func newTarget(url string, conns int, timeout time.Duration, pids []int) (*target, error) {
	var uri fasthttp.URI
	if err := uri.Parse(nil, []byte(url)); err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return &target{
		url:  url,
		pids: pids,
		hc: &fasthttp.HostClient{
			Addr:                          string(uri.Host()),
			MaxConns:                      conns,
			MaxIdleConnDuration:           time.Minute,
			ReadTimeout:                   timeout,
			WriteTimeout:                  timeout,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			MaxIdemponentCallAttempts:     1,
		},
	}, nil
}

type result struct {
	h         hist
	lag       hist // intended send time to actual send: the generator's own delay
	errors    uint64
	late      uint64 // recorded requests still unanswered when loadgen gave up waiting
	cpuPerReq string
	cpuPct    string
}

func (r *run) do(warmup, duration time.Duration, workers int, targets []*target) {
	start := time.Now().Add(50 * time.Millisecond)
	winStart := start.Add(warmup)
	winEnd := winStart.Add(duration)
	total := int64((warmup + duration) / r.interval)

	// Due times are offsets from start; the channels are deep enough that the
	// scheduler never waits on busy workers, so a slow proxy cannot slow the schedule.
	var mu sync.Mutex
	var wg sync.WaitGroup
	var giveUp atomic.Bool
	for _, t := range targets {
		t.due = make(chan time.Duration, min(total, 1<<20))
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var h, lag hist
				var errs uint64
				req := fasthttp.AcquireRequest()
				resp := fasthttp.AcquireResponse()
				req.SetRequestURI(t.url)
				for off := range t.due {
					if giveUp.Load() {
						continue // drain what the schedule queued; it counts as late
					}
					intended := start.Add(off)
					sent := time.Now()
					err := t.hc.DoTimeout(req, resp, r.timeout)
					lat := time.Since(intended)
					if intended.Before(winStart) || !intended.Before(winEnd) {
						continue
					}
					h.record(int64(lat))
					lag.record(int64(sent.Sub(intended)))
					t.inWindow.Add(1)
					if err != nil || resp.StatusCode() != fasthttp.StatusOK {
						errs++
					}
				}
				mu.Lock()
				t.res.h.merge(&h)
				t.res.lag.merge(&lag)
				t.res.errors += errs
				mu.Unlock()
			}()
		}
	}

	var t0, t1 time.Time
	window := int64(0)
	sampled := false
	// time.Sleep cannot pace this: an idle Go scheduler sleeps in epoll with
	// millisecond resolution, so a 100µs sleep wakes about 1 ms late, which
	// would release requests in bursts and charge the lag to the proxy. A
	// timerfd in the netpoller wakes on the kernel's high-resolution timer.
	tick, err := newTicker(max(r.interval, 20*time.Microsecond))
	if err != nil {
		log.Fatalf("loadgen: %v", err)
	}
	defer tick.Close()
	for i := int64(0); i < total; {
		now := time.Now()
		for ; i < total && !start.Add(time.Duration(i)*r.interval).After(now); i++ {
			off := time.Duration(i) * r.interval
			if !start.Add(off).Before(winStart) {
				if !sampled {
					sampled = true
					for _, t := range targets {
						t.cpu0 = cpuSeconds(t.pids)
					}
					t0 = time.Now()
				}
				window++
			}
			// Request i goes to every target; which one is first alternates,
			// so neither is always handed its request a moment earlier.
			for j := range targets {
				targets[(int(i)+j)%len(targets)].due <- off
			}
		}
		if i < total {
			if err := tick.wait(); err != nil {
				log.Fatalf("loadgen: %v", err)
			}
		}
	}
	for _, t := range targets {
		close(t.due)
	}
	// Sample the end of the window once every recorded request has finished or
	// the timeout has passed; requests unanswered or still unsent then count
	// as late (the generator fell behind its schedule: the run is not valid).
	deadline := time.Now().Add(r.timeout + time.Second)
	for !allDone(targets, window) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling the counters; no event exists
	}
	t1 = time.Now()
	cpu1 := make([]float64, len(targets))
	for i, t := range targets {
		cpu1[i] = cpuSeconds(t.pids)
	}
	giveUp.Store(true)
	wg.Wait()
	for i, t := range targets {
		res := &t.res
		res.late = uint64(window - t.inWindow.Load())
		if len(t.pids) > 0 && res.h.total > 0 {
			res.cpuPerReq = fmt.Sprintf("%.2f", (cpu1[i]-t.cpu0)*1e6/float64(res.h.total))
			res.cpuPct = fmt.Sprintf("%.1f", (cpu1[i]-t.cpu0)/t1.Sub(t0).Seconds()*100)
		} else {
			res.cpuPerReq, res.cpuPct = "-", "-"
		}
	}
}

func allDone(targets []*target, window int64) bool {
	for _, t := range targets {
		if t.inWindow.Load() < window {
			return false
		}
	}
	return true
}

func us(ns uint64) float64 { return float64(ns) / 1e3 }

func parsePIDs(s string) []int {
	p, err := proc.ParsePIDs(s)
	if err != nil {
		log.Fatalf("loadgen: %v", err)
	}
	return p
}

// cpuSeconds sums utime+stime of the given processes.
func cpuSeconds(pids []int) float64 {
	t, err := proc.CPUSeconds(pids)
	if err != nil {
		log.Fatalf("loadgen: %v", err)
	}
	return t
}
