package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/admin"
	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/discovery"
	"github.com/kelpie-lb/kelpie/health"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/kelpie-lb/kelpie/proxy"
)

// app is one running kelpie: the pools of every upstream with their health
// checkers and discovery watches, the proxy, and the admin endpoint. It is
// built from a config by newApp, started by start, changed by reload and
// stopped by shutdown.
type app struct {
	log     *slog.Logger
	level   *slog.LevelVar
	path    string          // the config file; fixed for the process
	ctx     context.Context // lives until shutdown finishes
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	proxy   *proxy.Proxy
	consul  atomic.Pointer[discovery.Consul] // nil until an upstream uses Consul
	metrics *metrics.Metrics
	admin   *admin.Server
	cl      *clusterPart // nil without a cluster: block

	mu        sync.Mutex // serializes reloads, start and shutdown
	cfg       *config.Config
	upstreams map[string]*upstream
	started   bool                             // start ran: commit starts what it adds
	failStep  func(step string) error          // tests: make a reload step fail
	pools     atomic.Pointer[[]*balancer.Pool] // for the admin API and metrics, sorted by name

	proxyLn, adminLn net.Listener
	tlsLn            net.Listener     // the TLS listener, with a tls block
	certs            *proxy.CertStore // its certificates from files, if any
	acme             *proxy.ACME      // its automatic certificates, if any
	tlsConfig        *tls.Config      // its config
	adminSrv         *http.Server
	stopping         atomic.Bool
	accessLog        io.Closer // the access log file, if any
}

// upstream is one pool with what keeps it current.
type upstream struct {
	pool    *balancer.Pool
	checker *health.Checker
	stop    context.CancelFunc  // the checker's Run
	consul  bool                // has a Consul watch...
	spec    discovery.WatchSpec // ...for this
}

// newApp builds the components for cfg without opening any socket or
// starting any goroutine.
func newApp(cfg *config.Config, log *slog.Logger, level *slog.LevelVar) (*app, error) {
	token := config.Token(cfg.Admin.TokenEnv)
	if token == "" && !config.IsLoopback(cfg.Admin.Listen) {
		return nil, fmt.Errorf("admin.listen %s is not a loopback address and $%s is empty: refusing to expose the admin API without a token",
			cfg.Admin.Listen, cfg.Admin.TokenEnv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &app{log: log, level: level, path: cfg.Path, ctx: ctx, cancel: cancel, upstreams: map[string]*upstream{}}
	a.pools.Store(&[]*balancer.Pool{})
	a.metrics = metrics.New(a.poolList)
	access, closer, err := accessLogger(cfg.AccessLog, os.Stderr)
	if err != nil {
		cancel()
		return nil, err
	}
	a.accessLog = closer
	if a.certs, err = newCertStore(cfg, a); err == nil {
		a.acme, err = newACME(cfg, a.log)
	}
	if err == nil && cfg.TLS != nil {
		a.tlsConfig, err = serverTLS(cfg.TLS, a.certs, a.acme)
	}
	if err != nil {
		a.close()
		return nil, err
	}
	po := proxyOptions(cfg, log, access)
	po.FencingHeader, po.FencingToken = fencing(cfg, a)
	p, err := proxy.New(po, nil)
	if err != nil {
		a.close()
		return nil, err
	}
	a.proxy = p
	a.mu.Lock()
	pl, err := a.plan(cfg)
	if err == nil {
		err = a.commit(pl)
	}
	a.mu.Unlock()
	if err != nil {
		a.close()
		return nil, err
	}
	if a.cl, err = newClusterPart(cfg, a.poolList, a.metrics, log); err != nil {
		a.close()
		return nil, err
	}
	a.admin = admin.New(admin.Options{
		Fleet:     a.cl.fleet(),
		HA:        a.cl.haStatusFunc(),
		Token:     token,
		Upstreams: a.poolList,
		Ready:     a.ready,
		Status:    a.status,
		Metrics:   a.metrics.Handler(),
		Logger:    log.With("component", "admin"),
		StatePath: cfg.Admin.StateFile,

		Counts:         a.upstreamCounts,
		DetectionBound: a.detectionBound,
		Heartbeat:      a.heartbeat,
	})
	if cfg.Admin.StateFile != "" {
		st, err := admin.LoadState(cfg.Admin.StateFile)
		if err != nil {
			log.Warn("drain state not restored", "file", cfg.Admin.StateFile, "err", err)
		}
		st.Apply(a.poolList())
	}
	return a, nil
}

// close releases what newApp made when it fails half-way.
func (a *app) close() {
	a.cancel()
	if a.accessLog != nil {
		a.accessLog.Close()
	}
}

// poolList returns the current pools, sorted by upstream name.
func (a *app) poolList() []*balancer.Pool { return *a.pools.Load() }

func (a *app) poolByName(name string) *balancer.Pool {
	for _, p := range a.poolList() {
		if p.Name() == name {
			return p
		}
	}
	return nil
}

// runConsul runs Consul discovery until shutdown.
func (a *app) runConsul(c *discovery.Consul) {
	a.wg.Go(func() {
		if err := c.Run(a.ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("consul discovery stopped", "err", err)
		}
	})
}

// runChecker runs u's health checker until u is removed or shutdown.
func (a *app) runChecker(u *upstream) {
	ctx, stop := context.WithCancel(a.ctx)
	u.stop = stop
	a.wg.Go(func() {
		if err := u.checker.Run(ctx, u.pool); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("health checker stopped", "upstream", u.pool.Name(), "err", err)
		}
	})
}

// start opens the listeners (cfg addresses unless overridden by a test) and
// serves until shutdown.
func (a *app) start(proxyAddr, adminAddr string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if proxyAddr == "" {
		proxyAddr = a.cfg.Listen
	}
	if adminAddr == "" {
		adminAddr = a.cfg.Admin.Listen
	}
	var err error
	if a.proxyLn, err = proxy.Listen(proxyAddr, proxy.IOMode(a.cfg.IO)); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if a.adminLn, err = net.Listen("tcp", adminAddr); err != nil {
		a.proxyLn.Close()
		return fmt.Errorf("admin.listen: %w", err)
	}
	if a.tlsConfig != nil {
		if a.tlsLn, err = proxy.Listen(a.cfg.TLS.Listen, proxy.IOMode(a.cfg.IO)); err != nil {
			a.proxyLn.Close()
			a.adminLn.Close()
			return fmt.Errorf("tls.listen: %w", err)
		}
		a.wg.Go(func() {
			if err := a.proxy.ServeTLS(a.tlsLn, a.tlsConfig); err != nil {
				a.log.Error("tls proxy stopped", "err", err)
			}
		})
		if a.certs != nil {
			a.wg.Go(func() { a.certs.Watch(a.ctx, certWatchInterval) })
		}
		if a.acme != nil {
			// Obtain the certificates now rather than in the first
			// client's handshake. autocert renews them in its own
			// goroutines from then on.
			go func() {
				if err := a.acme.Warm(); err != nil {
					a.log.Error("acme: certificate not obtained yet; retried on the next handshake", "err", err)
				} else {
					a.log.Info("acme: certificates ready")
				}
			}()
		}
		a.log.Info("tls listener started", "listen", a.tlsLn.Addr().String())
	}
	a.started = true
	for _, u := range a.upstreams {
		if u.stop == nil {
			a.runChecker(u)
		}
	}
	if c := a.consul.Load(); c != nil {
		a.runConsul(c)
	}
	if a.cl != nil {
		a.cl.start(a.ctx, &a.wg, a.proxyLn.Addr(), a.adminLn.Addr())
	}
	a.adminSrv = &http.Server{Handler: a.admin, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		if err := a.adminSrv.Serve(a.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin server stopped", "err", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		if err := a.proxy.Serve(a.proxyLn); err != nil {
			a.log.Error("proxy stopped", "err", err)
		}
	}()
	a.log.Info("kelpie started", "listen", a.proxyLn.Addr().String(), "admin", "http://"+a.adminLn.Addr().String()+"/",
		"upstreams", len(a.upstreams), "version", version())
	return nil
}

// ready is /readyz: config loaded, not shutting down, and every upstream has
// an eligible backend or has synced with discovery.
func (a *app) ready() bool {
	if a.stopping.Load() || a.cl != nil && !a.cl.ready() {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, u := range a.upstreams {
		if u.pool.Snapshot().EligibleCount() > 0 {
			continue
		}
		if u.consul {
			if st, ok := a.consul.Load().SinkStatus(u.pool); ok && st.Synced {
				continue
			}
		}
		return false
	}
	return true
}

func (a *app) consulAges() map[string]time.Duration {
	out := map[string]time.Duration{}
	now := time.Now()
	c := a.consul.Load()
	if c == nil {
		return out
	}
	for _, st := range c.Status() {
		if st.Synced {
			out[st.Spec.String()] = st.Age(now)
		}
	}
	return out
}

func (a *app) status() any {
	st := map[string]any{"version": version(), "config": a.path, "stopping": a.stopping.Load()}
	if c := a.consul.Load(); c != nil {
		st["consul"] = c.Status()
	}
	return st
}

// shutdown stops kelpie gracefully: readiness fails at once; after the
// readiness delay the proxy stops accepting and waits up to the grace period
// for in-flight requests; then everything else stops. It returns an error
// when requests were still in flight at the end of the grace period.
func (a *app) shutdown() error {
	if !a.stopping.CompareAndSwap(false, true) {
		return nil
	}
	a.mu.Lock()
	delay, grace := a.cfg.Shutdown.ReadinessDelay, a.cfg.Shutdown.Grace
	a.mu.Unlock()
	a.log.Info("shutting down", "readiness_delay", delay, "grace", grace)
	if a.cl != nil {
		a.cl.stepDown()
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var err error
	if a.proxyLn != nil {
		if err = a.proxy.Shutdown(ctx); err != nil {
			err = fmt.Errorf("grace period %s ended with requests in flight: %w", grace, err)
		}
		// Tunnels (WebSockets) are not requests fasthttp waits for: they
		// get what is left of the grace period, then are closed.
		if terr := a.proxy.CloseTunnels(ctx); terr != nil && err == nil {
			err = fmt.Errorf("grace period %s ended with tunnels open: closed them: %w", grace, terr)
		}
		// Shutdown closes only listeners Serve has registered: one whose
		// Serve goroutine had not got that far would accept forever.
		a.proxyLn.Close()
		if a.tlsLn != nil {
			a.tlsLn.Close()
		}
	}
	if a.admin != nil {
		a.admin.Close() // ends running drills and their faults
	}
	a.mu.Lock() // a reload either finished starting its goroutines or sees ctx done
	a.cancel()
	a.mu.Unlock()
	if a.adminSrv != nil {
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		a.adminSrv.Shutdown(actx)
		acancel()
	}
	a.wg.Wait()
	for _, p := range a.poolList() {
		p.Close()
	}
	if a.accessLog != nil {
		a.accessLog.Close()
	}
	a.log.Info("stopped")
	return err
}
