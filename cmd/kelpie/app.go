package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
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
	consul  *discovery.Consul // nil when no upstream uses Consul
	metrics *metrics.Metrics
	admin   *admin.Server

	mu        sync.Mutex // serializes reloads and shutdown
	cfg       *config.Config
	upstreams map[string]*upstream
	pools     atomic.Pointer[[]*balancer.Pool] // for the admin API and metrics, sorted by name

	proxyLn, adminLn net.Listener
	adminSrv         *http.Server
	stopping         atomic.Bool
	accessLog        io.Closer // the access log file, if any
}

// upstream is one pool with what keeps it current.
type upstream struct {
	pool    *balancer.Pool
	checker *health.Checker
	stop    context.CancelFunc // the checker's Run
	data    *proxy.Upstream
	consul  bool                // has a Consul watch...
	spec    discovery.WatchSpec // ...for this
}

// newApp builds the components for cfg without opening any socket.
func newApp(cfg *config.Config, log *slog.Logger, level *slog.LevelVar) (*app, error) {
	token := config.Token(cfg.Admin.TokenEnv)
	if token == "" && !config.IsLoopback(cfg.Admin.Listen) {
		return nil, fmt.Errorf("admin.listen %s is not a loopback address and $%s is empty: refusing to expose the admin API without a token",
			cfg.Admin.Listen, cfg.Admin.TokenEnv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &app{log: log, level: level, path: cfg.Path, ctx: ctx, cancel: cancel, upstreams: map[string]*upstream{}}
	a.pools.Store(&[]*balancer.Pool{})
	for _, u := range cfg.Upstreams {
		if u.Consul != nil && a.consul == nil {
			c, err := discovery.NewConsul(discovery.ConsulOptions{
				Address:           cfg.Consul.Address,
				Token:             config.Token(cfg.Consul.TokenEnv),
				Datacenter:        cfg.Consul.Datacenter,
				RequireConsistent: !*cfg.Consul.Stale,
				EmptyGrace:        cfg.Consul.EmptyGrace,
				Logger:            log.With("component", "consul"),
			})
			if err != nil {
				cancel()
				return nil, fmt.Errorf("consul: %w", err)
			}
			a.consul = c
		}
	}
	a.metrics = metrics.New(a.poolList)
	if a.consul != nil {
		a.metrics.SetConsulStatus(a.consulAges)
	}
	access, closer, err := accessLogger(cfg.AccessLog, os.Stderr)
	if err != nil {
		cancel()
		return nil, err
	}
	a.accessLog = closer
	p, err := proxy.New(proxyOptions(cfg, log, access), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	a.proxy = p
	if err := a.apply(cfg); err != nil {
		cancel()
		return nil, err
	}
	a.admin = admin.New(admin.Options{
		Token:     token,
		Upstreams: a.poolList,
		Ready:     a.ready,
		Status:    a.status,
		Metrics:   a.metrics.Handler(),
		Logger:    log.With("component", "admin"),
		StatePath: cfg.Admin.StateFile,
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

// apply makes cfg the running config: upstreams present before keep their
// pool and every backend's state; new ones are built; gone ones stop after
// their in-flight requests. Called by newApp and reload.
func (a *app) apply(cfg *config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := map[string]*upstream{}
	for _, uc := range cfg.Upstreams {
		u := a.upstreams[uc.Name]
		if u == nil {
			u = &upstream{checker: health.New(healthOptions(uc, a.log))}
			u.pool = balancer.NewPool(poolOptions(uc, u.checker, a.log))
			if a.ctx.Err() == nil {
				a.runChecker(u)
			}
		} else {
			u.checker.Reconfigure(healthOptions(uc, a.log))
			u.pool.Reconfigure(poolOptions(uc, u.checker, a.log))
		}
		u.data = upstreamData(uc, u.pool)
		u.data.Stats = a.metrics.Upstream(u.pool) // the same across reloads: counters continue
		discovery.Static(u.pool, staticMembers(uc))
		if err := a.rewatch(u, uc); err != nil {
			return err
		}
		next[uc.Name] = u
	}
	routes, err := buildRoutes(cfg, next)
	if err != nil {
		return err
	}
	if err := a.proxy.SetRoutes(routes); err != nil {
		return err
	}
	for name, u := range a.upstreams {
		if next[name] == nil {
			a.log.Info("upstream removed", "upstream", name)
			if a.consul != nil {
				a.consul.Unwatch(u.pool)
			}
			u.stop()
			u.pool.Close()
			a.metrics.Forget(u.pool)
		}
	}
	a.upstreams = next
	pools := make([]*balancer.Pool, 0, len(next))
	for _, u := range next {
		pools = append(pools, u.pool)
	}
	slices.SortFunc(pools, func(x, y *balancer.Pool) int { return strings.Compare(x.Name(), y.Name()) })
	a.pools.Store(&pools)
	a.cfg = cfg
	return nil
}

// rewatch points u's Consul watch at what uc asks for, leaving an
// unchanged watch alone so that its members stay.
func (a *app) rewatch(u *upstream, uc config.Upstream) error {
	want := uc.Consul != nil
	var spec discovery.WatchSpec
	if want {
		spec = watchSpec(*uc.Consul)
	}
	if want == u.consul && spec == u.spec {
		return nil
	}
	if want && a.consul == nil {
		return fmt.Errorf("upstream %s: Consul was not configured at start; restart kelpie to add the first Consul upstream", uc.Name)
	}
	if u.consul && !want {
		a.consul.Unwatch(u.pool) // clears the pool's Consul members
	}
	u.consul, u.spec = want, spec
	if !want {
		u.pool.SetMembers(balancer.SourceConsul, nil)
		return nil
	}
	// Watch moves the pool to the new spec without clearing its members
	// until the new watch syncs.
	if err := a.consul.Watch(spec, u.pool); err != nil {
		return fmt.Errorf("upstream %s: %w", uc.Name, err)
	}
	return nil
}

func (a *app) runChecker(u *upstream) {
	ctx, stop := context.WithCancel(a.ctx)
	u.stop = stop
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := u.checker.Run(ctx, u.pool); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("health checker stopped", "upstream", u.pool.Name(), "err", err)
		}
	}()
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
	if a.proxyLn, err = net.Listen("tcp", proxyAddr); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if a.adminLn, err = net.Listen("tcp", adminAddr); err != nil {
		a.proxyLn.Close()
		return fmt.Errorf("admin.listen: %w", err)
	}
	for _, u := range a.upstreams {
		if u.stop == nil {
			a.runChecker(u)
		}
	}
	if a.consul != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.consul.Run(a.ctx); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("consul discovery stopped", "err", err)
			}
		}()
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
	if a.stopping.Load() {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, u := range a.upstreams {
		if u.pool.Snapshot().EligibleCount() > 0 {
			continue
		}
		if u.consul {
			if st, ok := a.consul.SinkStatus(u.pool); ok && st.Synced {
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
	for _, st := range a.consul.Status() {
		if st.Synced {
			out[st.Spec.String()] = st.Age(now)
		}
	}
	return out
}

func (a *app) status() any {
	st := map[string]any{"version": version(), "config": a.path, "stopping": a.stopping.Load()}
	if a.consul != nil {
		st["consul"] = a.consul.Status()
	}
	return st
}

// reload re-reads the config file; an invalid file leaves everything as it
// was. Settings that need new sockets are reported, not applied.
func (a *app) reload() error {
	cfg, err := config.Load(a.path)
	if err != nil {
		a.metrics.ConfigReloads.WithLabelValues(metrics.ReloadFailure).Inc()
		a.log.Error("config reload failed; keeping the running config", "file", a.path, "err", err)
		return err
	}
	a.mu.Lock()
	old := a.cfg
	a.mu.Unlock()
	for _, c := range []struct{ key, was, now string }{
		{"listen", old.Listen, cfg.Listen},
		{"admin.listen", old.Admin.Listen, cfg.Admin.Listen},
		{"consul.address", old.Consul.Address, cfg.Consul.Address},
	} {
		if c.was != c.now {
			a.log.Warn("config change needs a restart; keeping the old value", "key", c.key, "running", c.was, "file", c.now)
		}
	}
	cfg.Listen, cfg.Admin.Listen, cfg.Consul = old.Listen, old.Admin.Listen, old.Consul
	if err := a.apply(cfg); err != nil {
		a.metrics.ConfigReloads.WithLabelValues(metrics.ReloadFailure).Inc()
		a.log.Error("config reload failed; keeping the running config", "file", a.path, "err", err)
		return err
	}
	if a.level != nil {
		a.level.Set(logLevel(cfg.Log.Level))
	}
	a.metrics.ConfigReloads.WithLabelValues(metrics.ReloadSuccess).Inc()
	a.log.Info("config reloaded", "file", a.path, "upstreams", len(cfg.Upstreams), "routes", len(cfg.Routes))
	return nil
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
	}
	a.cancel()
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
