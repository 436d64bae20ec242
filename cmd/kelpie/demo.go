package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/config"
)

// demoOptions configures `kelpie demo`.
type demoOptions struct {
	Listen, Admin string        // preferred addresses; a free port is used when one is taken
	Chaos         bool          // make one backend fail now and then
	ChaosEvery    time.Duration // how often it starts failing
	ChaosFor      time.Duration // for how long
	Traffic       int           // background requests per second through the proxy; 0 = none
	Slow          time.Duration // how long GET /slow takes
}

// runDemo is `kelpie demo`: three demo backends, the balancer and the
// dashboard on localhost, until Ctrl-C.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demoOptions
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8080", "proxy address (a free port if this one is taken)")
	fs.StringVar(&o.Admin, "admin", "127.0.0.1:9901", "admin API and dashboard address (a free port if this one is taken)")
	fs.BoolVar(&o.Chaos, "chaos", false, "make demo-3 fail now and then, to watch failover and recovery")
	fs.DurationVar(&o.ChaosEvery, "chaos-every", 30*time.Second, "with -chaos: how often demo-3 starts failing")
	fs.DurationVar(&o.ChaosFor, "chaos-for", 10*time.Second, "with -chaos: how long each failure lasts")
	fs.IntVar(&o.Traffic, "traffic", 20, "background requests per second through the proxy, so the dashboard moves (0 = none)")
	fs.DurationVar(&o.Slow, "slow", 5*time.Second, "how long GET /slow takes, to watch a drain with a request in flight")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || o.Traffic < 0 || (o.Chaos && (o.ChaosFor <= 0 || o.ChaosEvery <= o.ChaosFor)) {
		fmt.Fprintln(stderr, "usage: kelpie demo [-listen ADDR] [-admin ADDR] [-traffic N] [-chaos [-chaos-every D -chaos-for D]]")
		fmt.Fprintln(stderr, "(-chaos-every must be longer than -chaos-for)")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := startDemo(o, log, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "kelpie demo: %v\n", err)
		return 1
	}
	d.printBanner(stdout)
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping…")
	if err := d.close(); err != nil {
		fmt.Fprintf(stderr, "kelpie demo: %v\n", err)
		return 1
	}
	return 0
}

// demo is a running `kelpie demo`.
type demo struct {
	app      *app
	backends []*demoBackend
	ProxyURL string // http://host:port
	AdminURL string // http://host:port
	opts     demoOptions
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// demoBackend is one in-process demo backend: it answers with its name,
// has a /health endpoint, and fails on demand.
type demoBackend struct {
	Name    string
	Addr    string
	srv     *fasthttp.Server
	failing atomic.Bool
	stop    chan struct{} // closed by close: ends /slow requests
	slow    time.Duration
}

func (b *demoBackend) handle(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain; charset=utf-8")
	if b.failing.Load() {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		fmt.Fprintf(ctx, "%s is failing (chaos)\n", b.Name)
		return
	}
	switch string(ctx.Path()) {
	case "/health":
		ctx.WriteString("ok\n")
	case "/slow":
		select {
		case <-time.After(b.slow):
		case <-b.stop:
		}
		fmt.Fprintf(ctx, "slow hello from %s (%s) after %s\n", b.Name, b.Addr, b.slow)
	default:
		fmt.Fprintf(ctx, "hello from %s (%s)\n", b.Name, b.Addr)
	}
}

// demoConfig is the config the demo runs: one upstream over the backends,
// with quick health checks so failures and recoveries show within seconds.
func demoConfig(listen, admin string, backends []*demoBackend) string {
	cfg := fmt.Sprintf(`listen: %q
admin:
  listen: %q
shutdown:
  grace: 3s
upstreams:
  - name: demo
    balance: round_robin
    slow_start: 5s
    backends:
`, listen, admin)
	for _, b := range backends {
		cfg += fmt.Sprintf("      - address: %q\n", b.Addr)
	}
	return cfg + `    health:
      active:
        path: /health
        interval: 1s
        timeout: 500ms
        rise: 2
        fall: 2
      passive:
        consecutive_failures: 3
        ejection: 5s
    retries:
      attempts: 2
    timeouts:
      connect: 1s
      response: 30s
`
}

// startDemo starts the backends, kelpie itself, the chaos schedule and the
// background traffic.
func startDemo(o demoOptions, log *slog.Logger, out io.Writer) (*demo, error) {
	d := &demo{opts: o}
	var lns []net.Listener
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("demo backend: %w", err)
		}
		lns = append(lns, ln)
	}
	// Named in address order, the order the dashboard and `kelpie backends`
	// list them in.
	slices.SortFunc(lns, func(a, b net.Listener) int { return strings.Compare(a.Addr().String(), b.Addr().String()) })
	for i, ln := range lns {
		b := &demoBackend{Name: fmt.Sprintf("demo-%d", i+1), Addr: ln.Addr().String(), stop: make(chan struct{}), slow: o.Slow}
		b.srv = &fasthttp.Server{Handler: b.handle, Name: b.Name}
		go b.srv.Serve(ln)
		d.backends = append(d.backends, b)
	}
	listen, admin := freeOr(o.Listen), freeOr(o.Admin)
	cfg, err := config.Parse("demo.yaml", []byte(demoConfig(listen, admin, d.backends)))
	if err != nil {
		d.closeBackends()
		return nil, fmt.Errorf("demo config: %w", err)
	}
	a, err := newApp(cfg, log, nil)
	if err != nil {
		d.closeBackends()
		return nil, err
	}
	if err := a.start(listen, admin); err != nil {
		a.shutdown()
		d.closeBackends()
		return nil, err
	}
	d.app = a
	d.ProxyURL = "http://" + a.proxyLn.Addr().String()
	d.AdminURL = "http://" + a.adminLn.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	if o.Chaos {
		d.wg.Add(1)
		go d.chaos(ctx, d.backends[len(d.backends)-1], out)
	}
	if o.Traffic > 0 {
		d.wg.Add(1)
		go d.traffic(ctx, o.Traffic)
	}
	return d, nil
}

// freeOr returns addr when it can be listened on now, else the same host
// with port 0 (any free port).
func freeOr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, "0")
}

// chaos makes b fail for ChaosFor every ChaosEvery, starting after one
// ChaosEvery-ChaosFor of calm.
func (d *demo) chaos(ctx context.Context, b *demoBackend, out io.Writer) {
	defer d.wg.Done()
	defer b.failing.Store(false)
	calm := d.opts.ChaosEvery - d.opts.ChaosFor
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(calm):
		}
		b.failing.Store(true)
		fmt.Fprintf(out, "chaos: %s (%s) fails every request and health check for %s\n", b.Name, b.Addr, d.opts.ChaosFor)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.opts.ChaosFor):
		}
		b.failing.Store(false)
		fmt.Fprintf(out, "chaos: %s recovers; watch it rejoin (and slow-start) on the dashboard\n", b.Name)
	}
}

// traffic sends rps GET / requests per second through the proxy.
func (d *demo) traffic(ctx context.Context, rps int) {
	defer d.wg.Done()
	c := &fasthttp.HostClient{Addr: d.app.proxyLn.Addr().String(), MaxConns: 64}
	defer c.CloseIdleConnections()
	tick := time.NewTicker(time.Second / time.Duration(rps))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		go func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(d.ProxyURL + "/")
			req.Header.Set("User-Agent", "kelpie-demo-traffic")
			_ = c.DoTimeout(req, resp, 5*time.Second)
		}()
	}
}

func (d *demo) printBanner(w io.Writer) {
	first := d.backends[0].Addr
	fmt.Fprintf(w, `
kelpie demo is running: three backends behind one balancer.

  proxy       %[1]s/
  dashboard   %[2]s/
  metrics     %[2]s/metrics
  backends    demo-1 %[3]s, demo-2 %[4]s, demo-3 %[5]s

Try:
  curl %[1]s/                      answered by demo-1, demo-2 and demo-3 in turn
  curl %[1]s/slow                  takes %[6]s: drain its backend meanwhile, it still finishes
  kelpie backends -admin %[2]s
  kelpie drain -admin %[2]s demo %[7]s
  kelpie ready -admin %[2]s demo %[7]s
`, d.ProxyURL, d.AdminURL, d.backends[0].Addr, d.backends[1].Addr, d.backends[2].Addr, d.opts.Slow, first)
	if d.opts.Traffic > 0 {
		fmt.Fprintf(w, "\nBackground traffic: %d requests/s (-traffic 0 turns it off).\n", d.opts.Traffic)
	}
	if d.opts.Chaos {
		fmt.Fprintf(w, "Chaos: demo-3 fails for %s every %s; kelpie routes around it.\n", d.opts.ChaosFor, d.opts.ChaosEvery)
	} else {
		fmt.Fprintln(w, "Add -chaos to make demo-3 fail now and then and watch failover and recovery.")
	}
	fmt.Fprintln(w, "\nPress Ctrl-C to stop.")
}

// close stops traffic and chaos, then kelpie (gracefully), then the
// backends.
func (d *demo) close() error {
	d.cancel()
	d.wg.Wait()
	for _, b := range d.backends {
		close(b.stop)
	}
	err := d.app.shutdown()
	d.closeBackends()
	return err
}

func (d *demo) closeBackends() {
	for _, b := range d.backends {
		b.srv.Shutdown()
	}
}
