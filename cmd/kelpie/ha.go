package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kelpie-lb/kelpie/admin"
	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/cluster"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/metrics"
)

// clusterPart is what the cluster: and ha: blocks add to an app:
// registration, fleet drains and the HA group. Built once at start; a
// reload does not change it (its keys need a restart).
type clusterPart struct {
	log     *slog.Logger
	cfg     config.Cluster
	client  *api.Client
	id      string
	drainer *cluster.Drainer
	ha      *cluster.HA // nil without ha.enabled
	m       *metrics.HA

	haStop context.CancelFunc
	haDone chan struct{}
	once   sync.Once
	// token is the fencing token while leading, else 0 (for the proxy's
	// fencing header).
	token atomic.Uint64
	// role is the last role counted in the transitions metric; only
	// roleChanged touches it, and the elector calls that from one goroutine.
	role cluster.Role
}

// newClusterPart builds the cluster part of cfg; nil without a cluster:
// block. With a VIP it fails at once when kelpie may not manage it
// (missing CAP_NET_ADMIN), rather than on the first election.
func newClusterPart(cfg *config.Config, pools func() []*balancer.Pool, m *metrics.Metrics, log *slog.Logger) (*clusterPart, error) {
	if cfg.Cluster == nil {
		return nil, nil
	}
	client, err := consulClient(cfg.Consul)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &clusterPart{log: log.With("component", "cluster"), cfg: *cfg.Cluster, client: client, m: m.NewHA()}
	c.id = cfg.Cluster.ID
	if c.id == "" {
		c.id = cluster.InstanceID(cfg.Cluster.Name, cfg.Admin.Listen)
	}
	c.drainer, err = cluster.NewDrainer(cluster.DrainerOptions{
		Client: client, Prefix: cluster.DrainPrefix(cfg.Cluster.Name), Pools: pools, Logger: c.log,
	})
	if err != nil {
		return nil, err
	}
	if h := cfg.HA; h != nil && h.Enabled {
		o := cluster.HAOptions{
			Elector: cluster.ElectorOptions{
				Client: client, Key: h.LockKey, ID: c.id,
				SessionTTL: h.SessionTTL, LockDelay: h.LockDelay, CheckTTL: h.CheckTTL,
				Priority: *h.Priority, Preempt: h.Preempt,
				OnChange: c.roleChanged, Logger: c.log,
			},
			OnConsulLoss: h.OnConsulLoss,
		}
		if h.VIP != nil {
			addr, err := netip.ParseAddr(h.VIP.Address) // validated by config
			if err != nil {
				return nil, fmt.Errorf("ha.vip.address: %w", err)
			}
			o.VIP = &cluster.VIP{Addr: addr, Interface: h.VIP.Interface}
		}
		if c.ha, err = cluster.NewHA(o); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// roleChanged feeds the HA metrics; called by the elector in order.
func (c *clusterPart) roleChanged(st cluster.Status) {
	leader := 0.0
	if st.Role == cluster.RoleLeader {
		leader = 1
		c.m.FencingToken.Set(float64(st.FencingToken))
	}
	c.m.Leader.Set(leader)
	if st.Role == cluster.RoleLeader {
		c.token.Store(st.FencingToken)
	} else {
		c.token.Store(0)
	}
	if st.Role != c.role {
		c.m.Transitions.WithLabelValues(string(st.Role)).Inc()
		c.role = st.Role
	}
}

// start runs registration, the drain watch and the election under ctx.
// proxyAddr and adminAddr are the bound listeners.
func (c *clusterPart) start(ctx context.Context, wg *sync.WaitGroup, proxyAddr, adminAddr net.Addr) {
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				c.log.Error(name+" stopped", "err", err)
			}
		}()
	}
	run("fleet drain watch", c.drainer.Run)
	wg.Add(1)
	go func() { defer wg.Done(); c.countDrains(ctx) }()
	if c.cfg.Register {
		r := &cluster.Registrar{O: c.registration(proxyAddr, adminAddr), Logger: c.log}
		run("consul registration", r.Run)
	}
	if c.ha != nil {
		hctx, stop := context.WithCancel(ctx)
		c.haStop, c.haDone = stop, make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(c.haDone)
			c.ha.Run(hctx)
		}()
	}
}

// registration is the catalog entry: the advertised (or bound) proxy
// address and the admin endpoint's /readyz.
func (c *clusterPart) registration(proxyAddr, adminAddr net.Addr) cluster.RegistrationOptions {
	adv := c.cfg.Advertise
	if adv == "" {
		adv = proxyAddr.String()
	}
	advHost, _, _ := net.SplitHostPort(adv)
	checkHost, adminPort, _ := net.SplitHostPort(adminAddr.String())
	if ip := net.ParseIP(checkHost); ip == nil || ip.IsUnspecified() {
		checkHost = advHost
		if ip := net.ParseIP(checkHost); ip == nil || ip.IsUnspecified() {
			checkHost = "127.0.0.1" // the agent runs on this machine
		}
	}
	return cluster.RegistrationOptions{
		Client: c.client, ID: c.id, Cluster: c.cfg.Name, ProxyAddr: adv,
		ReadyURL: "http://" + net.JoinHostPort(checkHost, adminPort) + "/readyz",
		Meta:     map[string]string{"version": version()},
	}
}

func (c *clusterPart) countDrains(ctx context.Context) {
	for {
		ch := c.drainer.Changed()
		ds, _ := c.drainer.List()
		c.m.FleetDrains.Set(float64(len(ds)))
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// fencing returns the proxy's fencing header options for cfg: the header
// carries the token of the cluster part a resolves when serving starts.
func fencing(cfg *config.Config, a *app) (string, func() uint64) {
	if cfg.HA == nil || !cfg.HA.Enabled || cfg.HA.FencingHeader == "" {
		return "", nil
	}
	return cfg.HA.FencingHeader, func() uint64 {
		if a.cl == nil {
			return 0
		}
		return a.cl.token.Load()
	}
}

// ready is false while this instance is fenced.
func (c *clusterPart) ready() bool { return c.ha == nil || c.ha.Ready() }

// stepDown ends leadership first thing at shutdown: the VIP goes and the
// lock is released, so a standby serves while this instance drains.
func (c *clusterPart) stepDown() {
	c.once.Do(func() {
		if c.haStop == nil {
			return
		}
		c.haStop()
		select {
		case <-c.haDone:
		case <-time.After(5 * time.Second):
			c.log.Warn("ha: step-down took over 5s; continuing shutdown")
		}
	})
}

// haStatus is GET /api/v1/ha; nil when ha is off.
func (c *clusterPart) haStatusFunc() func() any {
	if c == nil || c.ha == nil {
		return nil
	}
	return func() any { return c.ha.Status() }
}

// fleet adapts the Drainer to the admin API; nil without a cluster.
func (c *clusterPart) fleet() admin.FleetDrains {
	if c == nil {
		return nil
	}
	return fleetDrains{c.drainer}
}

type fleetDrains struct{ d *cluster.Drainer }

func (f fleetDrains) Drain(ctx context.Context, upstream, address string, info admin.DrainInfo) error {
	return f.d.Drain(ctx, cluster.FleetDrain{Upstream: upstream, Address: address, By: info.By, Reason: info.Reason, At: info.At})
}

func (f fleetDrains) Ready(ctx context.Context, upstream, address string) error {
	return f.d.Ready(ctx, upstream, address)
}

func (f fleetDrains) Lookup(upstream, address string) (admin.DrainInfo, bool) {
	fd, ok := f.d.Lookup(upstream, address)
	if !ok {
		return admin.DrainInfo{}, false
	}
	return admin.DrainInfo{Scope: admin.ScopeFleet, By: fd.By, Reason: fd.Reason, At: fd.At}, true
}

// sameCluster reports whether a and b have the same cluster and ha blocks.
func sameCluster(a, b *config.Config) bool {
	return reflect.DeepEqual(a.Cluster, b.Cluster) && reflect.DeepEqual(a.HA, b.HA)
}

// whoAmI is the default author of a drain: user@host.
func whoAmI() string {
	u := os.Getenv("USER")
	if u == "" {
		u = "unknown"
	}
	h, _ := os.Hostname()
	return u + "@" + h
}

// consulClient is a client of the consul: block's agent, for the cluster
// and the ACME cache (discovery builds its own from consulOptions).
func consulClient(c config.Consul) (*api.Client, error) {
	acfg := api.DefaultConfig()
	acfg.Address = c.Address
	acfg.Datacenter = c.Datacenter
	if tok := config.Token(c.TokenEnv); tok != "" {
		acfg.Token = tok
	}
	client, err := api.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	return client, nil
}
