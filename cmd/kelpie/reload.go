package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/discovery"
	"github.com/kelpie-lb/kelpie/health"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/kelpie-lb/kelpie/proxy"
)

// A config becomes the running one in two phases. plan builds and checks
// everything on the side: pools and checkers of new upstreams (which run
// nothing yet), the options of upstreams that stay, watch specs, the
// Consul client if this is the first Consul upstream, and the routes; it
// changes nothing the running app uses, so a failed plan is simply
// dropped. commit then swaps the routes in (the one step that can still
// refuse, before anything else has changed) and applies the rest, which
// cannot fail. Both run with a.mu held.

// errStopping refuses a reload that races with shutdown.
var errStopping = errors.New("kelpie is shutting down")

// plan is a config made ready to commit.
type plan struct {
	cfg       *config.Config
	consul    *discovery.Consul // made by this plan: the first Consul upstream
	upstreams []*planned        // in config order
	routes    []proxy.Route
}

// planned is one upstream of a plan: an existing one (kept) with its new
// settings, or a new one that exists only in the plan so far.
type planned struct {
	u      *upstream
	fresh  bool // built by the plan; nothing runs yet
	health health.Options
	pool   balancer.Options
	static []balancer.Member
	data   *proxy.Upstream
	consul bool                // follows a Consul service...
	spec   discovery.WatchSpec // ...this one
}

// step runs a plan step's fault hook (tests make any step fail with it).
func (a *app) step(name string) error {
	if a.failStep == nil {
		return nil
	}
	if err := a.failStep(name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// plan prepares cfg without changing anything that runs. Called with a.mu
// held. On error, nothing it built is left behind.
func (a *app) plan(cfg *config.Config) (_ *plan, err error) {
	if a.ctx.Err() != nil {
		return nil, errStopping
	}
	p := &plan{cfg: cfg}
	defer func() {
		if err != nil {
			p.discard()
		}
	}()
	if a.consul.Load() == nil && slices.ContainsFunc(cfg.Upstreams, func(u config.Upstream) bool { return u.Consul != nil }) {
		if err := a.step("consul"); err != nil {
			return nil, err
		}
		c, err := discovery.NewConsul(consulOptions(cfg.Consul, a.log))
		if err != nil {
			return nil, fmt.Errorf("consul: %w", err)
		}
		p.consul = c
	}
	data := map[string]*proxy.Upstream{}
	for _, uc := range cfg.Upstreams {
		if err := a.step("upstream " + uc.Name); err != nil {
			return nil, err
		}
		h := healthOptions(uc, a.log)
		ut, err := upstreamTLS(uc)
		if err != nil {
			return nil, err
		}
		if h.Active != nil {
			h.Active.TLS = ut // probes check what requests use
		}
		u := a.upstreams[uc.Name]
		fresh := u == nil
		if fresh {
			// Built here, started by commit: a checker does nothing
			// until Run, and a pool no route leads to is private.
			u = &upstream{checker: health.New(h)}
		}
		pu := &planned{u: u, fresh: fresh, health: h, pool: poolOptions(uc, u.checker, a.metrics.Incidents(uc.Name), a.log), static: staticMembers(uc)}
		if fresh {
			u.pool = balancer.NewPool(pu.pool)
		}
		p.upstreams = append(p.upstreams, pu) // before any error: discard closes it
		if pu.data, err = upstreamData(uc, u.pool); err != nil {
			return nil, err
		}
		pu.data.TLS = ut
		if uc.Consul != nil {
			if err := a.step("watch " + uc.Name); err != nil {
				return nil, err
			}
			pu.consul, pu.spec = true, watchSpec(*uc.Consul)
			if pu.spec.Service == "" {
				return nil, fmt.Errorf("upstream %s: %w", uc.Name, discovery.ErrNoService)
			}
		}
		data[uc.Name] = pu.data
	}
	if err := a.step("routes"); err != nil {
		return nil, err
	}
	if p.routes, err = buildRoutes(cfg, data); err != nil {
		return nil, err
	}
	return p, nil
}

// discard releases what a plan built that never ran.
func (p *plan) discard() {
	for _, pu := range p.upstreams {
		if pu.fresh {
			pu.u.pool.Close()
		}
	}
}

// commit makes p the running config. Swapping the routes is its first
// change; if the proxy refuses them, p is discarded and nothing changed.
// Everything after cannot fail. Called with a.mu held.
func (a *app) commit(p *plan) error {
	if err := a.step("set routes"); err != nil {
		p.discard()
		return err
	}
	for _, pu := range p.upstreams {
		if pu.fresh { // members before the first route to it
			discovery.Static(pu.u.pool, pu.static)
		}
		// The pool's figures, the same across reloads: counters continue.
		pu.data.Stats = a.metrics.Upstream(pu.u.pool)
	}
	if err := a.proxy.SetRoutes(p.routes); err != nil {
		for _, pu := range p.upstreams {
			if pu.fresh {
				a.metrics.Forget(pu.u.pool)
			}
		}
		p.discard()
		return err
	}
	if p.consul != nil {
		a.consul.Store(p.consul)
		a.metrics.SetConsulStatus(a.consulAges)
		if a.started {
			a.runConsul(p.consul)
		}
	}
	consul := a.consul.Load()
	next := make(map[string]*upstream, len(p.upstreams))
	for _, pu := range p.upstreams {
		u := pu.u
		if pu.fresh {
			if a.started {
				a.runChecker(u)
			}
		} else {
			u.checker.Reconfigure(pu.health)
			u.pool.Reconfigure(pu.pool)
			discovery.Static(u.pool, pu.static)
		}
		switch {
		case pu.consul == u.consul && pu.spec == u.spec:
			// unchanged: the watch and its members stay
		case !pu.consul:
			consul.Unwatch(u.pool) // clears the pool's Consul members
		default:
			// Watch moves the pool to the new spec without clearing its
			// members until the new watch syncs. Its only error, a spec
			// without a service, was ruled out by plan.
			if err := consul.Watch(pu.spec, u.pool); err != nil {
				a.log.Error("consul watch not started", "upstream", u.pool.Name(), "err", err)
			}
		}
		u.consul, u.spec = pu.consul, pu.spec
		next[u.pool.Name()] = u
	}
	for name, u := range a.upstreams {
		if next[name] != nil {
			continue
		}
		a.log.Info("upstream removed", "upstream", name)
		if u.consul {
			consul.Unwatch(u.pool)
		}
		if u.stop != nil {
			u.stop()
		}
		u.pool.Close()
		a.metrics.Forget(u.pool)
	}
	a.upstreams = next
	pools := make([]*balancer.Pool, 0, len(next))
	for _, u := range next {
		pools = append(pools, u.pool)
	}
	slices.SortFunc(pools, func(x, y *balancer.Pool) int { return strings.Compare(x.Name(), y.Name()) })
	a.pools.Store(&pools)
	a.cfg = p.cfg
	return nil
}

// reload re-reads the config file and makes it the running one, all or
// nothing: an invalid file, or one whose plan fails (a Consul client that
// cannot be made, say), leaves everything as it was. Settings that need a
// restart are reported and keep their running values.
func (a *app) reload() error {
	err := a.reloadFile()
	if err != nil {
		a.metrics.ConfigReloads.WithLabelValues(metrics.ReloadFailure).Inc()
		a.log.Error("config reload failed; keeping the running config", "file", a.path, "err", err)
		return err
	}
	a.metrics.ConfigReloads.WithLabelValues(metrics.ReloadSuccess).Inc()
	return nil
}

func (a *app) reloadFile() error {
	if a.certs != nil {
		// Certificates reload even when the config does not; a bad
		// one keeps the old and is logged (once) by the store.
		_ = a.certs.Reload()
	}
	cfg, err := config.Load(a.path)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.cfg
	a.keepRestartOnly(old, cfg)
	p, err := a.plan(cfg)
	if err != nil {
		return err
	}
	if err := a.commit(p); err != nil {
		return err
	}
	if a.level != nil {
		a.level.Set(logLevel(cfg.Log.Level))
	}
	if a.cl != nil {
		a.cl.drainer.Apply() // new upstreams get their fleet drains
	}
	a.log.Info("config reloaded", "file", a.path, "upstreams", len(cfg.Upstreams), "routes", len(cfg.Routes))
	return nil
}

// keepRestartOnly copies into cfg the running values of settings a reload
// cannot change (listeners, the proxy's limits and logs, a Consul client
// already made), warning about each one the file changes.
func (a *app) keepRestartOnly(old, cfg *config.Config) {
	keep := func(key string, running, file any) {
		if fmt.Sprint(running) != fmt.Sprint(file) { // as logged; nil and empty lists agree
			a.log.Warn("config change needs a restart; keeping the running value", "key", key, "running", running, "file", file)
		}
	}
	keep("listen", old.Listen, cfg.Listen)
	keep("admin.listen", old.Admin.Listen, cfg.Admin.Listen)
	keep("admin.token_env", old.Admin.TokenEnv, cfg.Admin.TokenEnv)
	keep("admin.state_file", old.Admin.StateFile, cfg.Admin.StateFile)
	keep("limits", old.Limits, cfg.Limits)
	keep("trusted_proxies", old.TrustedProxies, cfg.TrustedProxies)
	keep("access_log", old.AccessLog, cfg.AccessLog)
	keep("tls", tlsShape(old.TLS), tlsShape(cfg.TLS)) // the files' contents do reload: a.certs
	cfg.Listen, cfg.Admin, cfg.Limits, cfg.TrustedProxies, cfg.AccessLog = old.Listen, old.Admin, old.Limits, old.TrustedProxies, old.AccessLog
	cfg.TLS = old.TLS
	if !sameCluster(old, cfg) {
		a.log.Warn("config change needs a restart; keeping the running value", "key", "cluster, ha")
	}
	cfg.Cluster, cfg.HA = old.Cluster, old.HA
	if a.consul.Load() == nil {
		return // the file's consul block is used when the first Consul upstream arrives
	}
	keep("consul.address", old.Consul.Address, cfg.Consul.Address)
	keep("consul.token_env", old.Consul.TokenEnv, cfg.Consul.TokenEnv)
	keep("consul.datacenter", old.Consul.Datacenter, cfg.Consul.Datacenter)
	keep("consul.stale", *old.Consul.Stale, *cfg.Consul.Stale)
	keep("consul.empty_grace", old.Consul.EmptyGrace, cfg.Consul.EmptyGrace)
	cfg.Consul = old.Consul
}
