package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/discovery"
	"github.com/kelpie-lb/kelpie/health"
	"github.com/kelpie-lb/kelpie/proxy"
)

// This file translates config into each package's Options: the only place,
// with config.go's loader, that knows the config's shape.

func poolOptions(u config.Upstream, c *health.Checker, inc balancer.IncidentObserver, log *slog.Logger) balancer.Options {
	algo, _ := balancer.ParseAlgorithm(u.Balance)     // validated by config
	failback, _ := balancer.ParseFailback(u.Failback) // validated by config
	o := balancer.Options{
		Name:           u.Name,
		Algorithm:      algo,
		SlowStart:      *u.SlowStart,
		PanicThreshold: *u.PanicThreshold,
		Failback:       failback,
		EWMADecay:      u.EWMADecay,
		NewGuard:       c.NewGuard,
		Incidents:      inc,
		Logger:         log,
	}
	o.HashBalanceFactor = u.HashBalanceFactor
	o.HashFallback, _ = balancer.ParseAlgorithm(u.HashFallback)
	o.Policy = policy(u)
	return o
}

// policy describes how u spreads requests, for the admin API and the
// dashboard: "hash header:X-User, bound 125%, sticky cookie lb".
func policy(u config.Upstream) string {
	parts := []string{u.Balance}
	if u.Balance == balancer.Hash.String() {
		parts[0] += " " + u.HashOn
		if u.HashBalanceFactor > 0 {
			parts = append(parts, fmt.Sprintf("bound %d%%", u.HashBalanceFactor))
		}
	}
	if u.Sticky != nil {
		parts = append(parts, "sticky cookie "+u.Sticky.Cookie)
	}
	return strings.Join(parts, ", ")
}

func staticMembers(u config.Upstream) []balancer.Member {
	ms := make([]balancer.Member, len(u.Backends))
	for i, b := range u.Backends {
		ms[i] = balancer.Member{Address: b.Address, Weight: *b.Weight, Backup: b.Backup}
	}
	return ms
}

func watchSpec(c config.ConsulSource) discovery.WatchSpec {
	return discovery.WatchSpec{
		Service:              c.Service,
		Tag:                  c.Tag,
		Datacenter:           c.Datacenter,
		IncludeWarning:       c.Warning,
		WarningWeightPercent: *c.WarningWeight,
	}
}

func upstreamData(u config.Upstream, p *balancer.Pool) (*proxy.Upstream, error) {
	hashOn, _ := proxy.ParseHashOn(u.HashOn) // validated by config
	sticky, err := stickyOptions(u)
	if err != nil {
		return nil, err
	}
	return &proxy.Upstream{
		Pool:               p,
		ConnectTimeout:     u.Timeouts.Connect,
		ResponseTimeout:    u.Timeouts.Response,
		IdleConnTimeout:    u.Timeouts.Idle,
		TunnelIdle:         u.Timeouts.TunnelIdle,
		TunnelDrain:        u.Timeouts.TunnelDrain,
		Retries:            *u.Retries.Attempts,
		HedgeAfter:         hedgeAfter(u.Retries),
		HedgeAuto:          u.Retries.Hedge != nil && u.Retries.Hedge.After == config.HedgeAuto,
		MaxConnsPerBackend: u.MaxConnsPerBackend,
		MaxPendingConnects: u.MaxPendingConnects,
		DNSCache:           dnsCache(*u.DNSCache),
		HashOn:             hashOn,
		Sticky:             sticky,
	}, nil
}

// stickyOptions is the upstream's sticky block, nil when it has none. A
// secret_env that names an empty variable is an error: silently falling
// back to a per-process key would break sessions across instances.
func stickyOptions(u config.Upstream) (*proxy.Sticky, error) {
	s := u.Sticky
	if s == nil {
		return nil, nil
	}
	out := &proxy.Sticky{Cookie: s.Cookie, TTL: s.TTL, Secure: s.Secure, HTTPOnly: *s.HTTPOnly,
		SameSite: s.SameSite, DrainGrace: *s.DrainGrace}
	if s.SecretEnv != "" {
		secret := config.Token(s.SecretEnv)
		if secret == "" {
			return nil, fmt.Errorf("upstream %s: sticky.secret_env: $%s is empty", u.Name, s.SecretEnv)
		}
		out.Secret = []byte(secret)
	}
	return out, nil
}

// dnsCache maps dns_cache (0: no cache) onto proxy.Upstream.DNSCache
// (0: the default; negative: no cache).
func dnsCache(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// buildRoutes turns config routes into proxy routes; with no routes, the
// single upstream takes everything.
func buildRoutes(cfg *config.Config, ups map[string]*proxy.Upstream) ([]proxy.Route, error) {
	if len(cfg.Routes) == 0 {
		if len(cfg.Upstreams) != 1 {
			return nil, fmt.Errorf("routes are required with %d upstreams", len(cfg.Upstreams))
		}
		return []proxy.Route{{PathPrefix: "/", Upstream: ups[cfg.Upstreams[0].Name]}}, nil
	}
	routes := make([]proxy.Route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		routes[i] = proxy.Route{Host: r.Host, PathPrefix: r.PathPrefix, Upstream: ups[r.Upstream]}
	}
	return routes, nil
}

func trustedProxies(cidrs []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range cidrs {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

func logLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// newLogger builds kelpie's own logger; level can change on reload.
func newLogger(c config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(logLevel(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}

// accessLogger opens the access log, or returns nil when it is off.
func accessLogger(c config.AccessLog, fallback io.Writer) (*slog.Logger, io.Closer, error) {
	if !c.Enabled {
		return nil, nil, nil
	}
	if c.Path == "" {
		return slog.New(slog.NewJSONHandler(fallback, nil)), nil, nil
	}
	f, err := os.OpenFile(c.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("access_log.path: %w", err)
	}
	return slog.New(slog.NewJSONHandler(f, nil)), f, nil
}

func healthOptions(u config.Upstream, log *slog.Logger) health.Options {
	o := health.Options{
		Passive: health.PassiveOptions{
			ConsecutiveFailures: *u.Health.Passive.ConsecutiveFailures,
			Ejection:            u.Health.Passive.Ejection,
			MaxEjection:         u.Health.Passive.MaxEjection,
			MaxEjectedPercent:   *u.Health.Passive.MaxEjectedPercent,
		},
		Breaker: health.BreakerOptions{
			Disabled:         !*u.Health.Breaker.Enabled,
			FailureRatio:     u.Health.Breaker.FailureRatio,
			MinRequests:      u.Health.Breaker.MinRequests,
			Window:           u.Health.Breaker.Window,
			OpenTimeout:      u.Health.Breaker.OpenTimeout,
			HalfOpenRequests: u.Health.Breaker.HalfOpenRequests,
		},
		Logger: log.With("upstream", u.Name),
	}
	outlierOptions(&o.Passive, u.Health.Passive)
	if *u.Health.Passive.MaxEjectedPercent == 0 {
		// "eject at most 0%": ejection is off
		o.Passive.ConsecutiveFailures, o.Passive.Latency, o.Passive.SuccessRate, o.Passive.FailurePercentage = 0, nil, nil, nil
	}
	if hb := u.Health.Heartbeat; hb != nil {
		o.Heartbeat = &health.HeartbeatOptions{TTL: hb.TTL}
		if a := u.Health.Active; a != nil {
			o.Heartbeat.Rise = a.Rise
		}
	}
	if a := u.Health.Active; a != nil {
		lo, hi, _ := config.ParseStatusRange(a.ExpectStatus) // validated by config
		o.Active = &health.ActiveOptions{
			Host:              a.Host,
			ExpectStatusMin:   lo,
			ExpectStatusMax:   hi,
			Interval:          a.Interval,
			UnhealthyInterval: a.UnhealthyInterval,
			Timeout:           a.Timeout,
			Rise:              a.Rise,
			Fall:              a.Fall,
		}
		switch a.Type {
		case "http":
			o.Active.Path = a.Path // an empty path makes a TCP connect probe
		case "exec":
			o.Active.Command, o.Active.Upstream = a.Command, u.Name
		}
	}
	return o
}

func proxyOptions(cfg *config.Config, log, access *slog.Logger) proxy.Options {
	sample := 1
	if cfg.AccessLog.Sample > 0 {
		sample = max(int(1/cfg.AccessLog.Sample+0.5), 1)
	}
	return proxy.Options{
		MaxHeaderBytes:  cfg.Limits.MaxHeaderBytes,
		MaxURIBytes:     cfg.Limits.MaxURIBytes,
		MaxHeaderCount:  cfg.Limits.MaxHeaders,
		MaxBodyBytes:    cfg.Limits.MaxBodyBytes,
		ReadTimeout:     cfg.Limits.ReadTimeout,
		IdleTimeout:     cfg.Limits.IdleTimeout,
		WriteTimeout:    cfg.Limits.WriteTimeout, // 0 = none, in both
		Concurrency:     cfg.Limits.MaxConns,
		IO:              proxy.IOMode(cfg.IO),
		MaxTunnels:      cfg.Limits.MaxTunnels,
		TrustedProxies:  trustedProxies(cfg.TrustedProxies),
		AccessLog:       access,
		AccessLogSample: sample,
		Logger:          log.With("component", "proxy"),

		HTTPSRedirectPort: redirectPort(cfg),
	}
}

func consulOptions(c config.Consul, log *slog.Logger) discovery.ConsulOptions {
	return discovery.ConsulOptions{
		Address:           c.Address,
		Token:             config.Token(c.TokenEnv),
		Datacenter:        c.Datacenter,
		RequireConsistent: !*c.Stale,
		EmptyGrace:        c.EmptyGrace,
		Logger:            log.With("component", "consul"),
	}
}

// outlierOptions translates health.passive's outlier detection keys; a
// zero factor or threshold leaves that detector off.
func outlierOptions(o *health.PassiveOptions, p config.Passive) {
	o.KeepEjectedOnProbe = !*p.UnejectOnProbe
	o.CountGatewayOnly = p.CountAsFailure == "gateway"
	if l := p.Latency; *l.Factor > 0 {
		o.Latency = &health.LatencyOptions{Factor: *l.Factor, MinRequests: l.MinRequests, Interval: l.Interval}
	}
	if s := p.SuccessRate; *s.StdevFactor > 0 {
		o.SuccessRate = &health.SuccessRateOptions{StdevFactor: *s.StdevFactor, MinimumHosts: s.MinimumHosts,
			RequestVolume: s.RequestVolume, Interval: s.Interval}
	}
	if f := p.FailurePercentage; *f.Threshold > 0 {
		o.FailurePercentage = &health.FailurePercentageOptions{Threshold: *f.Threshold, MinimumHosts: f.MinimumHosts,
			RequestVolume: f.RequestVolume, Interval: f.Interval}
	}
}

// hedgeAfter is the fixed hedge delay of retries.hedge, 0 when omitted or
// auto (then HedgeAuto).
func hedgeAfter(r config.Retries) time.Duration {
	if r.Hedge == nil || r.Hedge.After == config.HedgeAuto {
		return 0
	}
	return time.Duration(r.Hedge.After)
}
