package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy"
)

type validator struct {
	root      *yaml.Node
	add       func(line int, format string, args ...any)
	allowExec bool // allow_exec_checks
}

func (v *validator) errf(path []any, format string, args ...any) {
	v.add(lineOf(v.root, path...), format, args...)
}

func at(path ...any) []any { return path }

func (v *validator) validate(c *Config) {
	v.allowExec = c.AllowExecChecks
	v.hostPort(at("listen"), "listen", c.Listen)
	v.hostPort(at("admin", "listen"), "admin.listen", c.Admin.Listen)
	v.tls(c.TLS, c.Listen)
	if !IsLoopback(c.Admin.Listen) && c.Admin.TokenEnv == "" {
		v.errf(at("admin", "listen"), "admin.listen %q is not a loopback address: set admin.token_env to protect it", c.Admin.Listen)
	}
	for i, cidr := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			if _, err2 := netip.ParseAddr(cidr); err2 != nil {
				v.errf(at("trusted_proxies", i), "trusted_proxies: %q is not a CIDR or an IP address", cidr)
			}
		}
	}
	v.positive(at("shutdown", "grace"), "shutdown.grace", c.Shutdown.Grace)
	v.nonNegative(at("shutdown", "readiness_delay"), "shutdown.readiness_delay", c.Shutdown.ReadinessDelay)
	v.positive(at("limits", "read_timeout"), "limits.read_timeout", c.Limits.ReadTimeout)
	v.positive(at("limits", "idle_timeout"), "limits.idle_timeout", c.Limits.IdleTimeout)
	v.nonNegative(at("limits", "write_timeout"), "limits.write_timeout", c.Limits.WriteTimeout)
	v.nonNegative(at("consul", "empty_grace"), "consul.empty_grace", c.Consul.EmptyGrace)
	for _, l := range []struct {
		key string
		n   int64
	}{{"max_header_bytes", int64(c.Limits.MaxHeaderBytes)}, {"max_uri_bytes", int64(c.Limits.MaxURIBytes)},
		{"max_headers", int64(c.Limits.MaxHeaders)}, {"max_conns", int64(c.Limits.MaxConns)},
		{"max_tunnels", int64(c.Limits.MaxTunnels)}} {
		if l.n <= 0 {
			v.errf(at("limits", l.key), "limits.%s must be positive", l.key)
		}
	}
	if c.Limits.MaxBodyBytes < 0 {
		v.errf(at("limits", "max_body_bytes"), "limits.max_body_bytes must be 0 (unlimited) or positive")
	}
	if c.AccessLog.Sample <= 0 || c.AccessLog.Sample > 1 {
		v.errf(at("access_log", "sample"), "access_log.sample must be in (0, 1]")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.errf(at("log", "level"), "log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch proxy.IOMode(c.IO) {
	case proxy.IORaw, proxy.IOStd:
	default:
		v.errf(at("io"), "io %q: want %s or %s", c.IO, proxy.IORaw, proxy.IOStd)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.errf(at("log", "format"), "log.format %q: want text or json", c.Log.Format)
	}

	v.cluster(c)
	if len(c.Upstreams) == 0 {
		v.errf(at("upstreams"), "at least one upstream is required")
	}
	names := map[string]int{}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Name == "" {
			v.errf(at("upstreams", i), "upstreams[%d]: name is required", i)
		} else if j, dup := names[u.Name]; dup {
			v.errf(at("upstreams", i, "name"), "upstream %q is defined twice (first at line %d)", u.Name, lineOf(v.root, "upstreams", j, "name"))
		} else {
			names[u.Name] = i
		}
		v.upstream(i, u)
		v.upstreamTLS(i, u)
	}

	if len(c.Routes) == 0 && len(c.Upstreams) > 1 {
		v.errf(at("routes"), "routes are required when there is more than one upstream")
	}
	seen := map[[2]string]bool{}
	for i, r := range c.Routes {
		if _, ok := names[r.Upstream]; !ok {
			v.errf(at("routes", i, "upstream"), "route to unknown upstream %q", r.Upstream)
		}
		if !strings.HasPrefix(r.PathPrefix, "/") {
			v.errf(at("routes", i, "path_prefix"), "path_prefix %q must start with /", r.PathPrefix)
		}
		if strings.ContainsAny(r.Host, "/ ") || strings.Contains(r.Host, ":") && !strings.HasPrefix(r.Host, "[") {
			v.errf(at("routes", i, "host"), "route host %q: give a bare host name (the port is ignored)", r.Host)
		}
		k := [2]string{strings.ToLower(r.Host), r.PathPrefix}
		if seen[k] {
			v.errf(at("routes", i), "route host %q path_prefix %q is defined twice", r.Host, r.PathPrefix)
		}
		seen[k] = true
	}
}

func (v *validator) upstream(i int, u *Upstream) {
	up := func(rest ...any) []any { return append([]any{"upstreams", i}, rest...) }
	if _, err := balancer.ParseAlgorithm(u.Balance); err != nil {
		v.errf(up("balance"), "upstream %q: %v", u.Name, err)
	}
	v.hashAndSticky(i, u)
	if len(u.Backends) == 0 && u.Consul == nil {
		v.errf(up(), "upstream %q has no backends and no consul service: it would be empty", u.Name)
	}
	addrs := map[string]bool{}
	for j, b := range u.Backends {
		v.hostPort(up("backends", j, "address"), fmt.Sprintf("upstream %q backend", u.Name), b.Address)
		if addrs[b.Address] {
			v.errf(up("backends", j, "address"), "upstream %q: backend %q is listed twice", u.Name, b.Address)
		}
		addrs[b.Address] = true
		if *b.Weight < 1 || *b.Weight > balancer.MaxWeight {
			v.errf(up("backends", j, "weight"), "upstream %q: weight %d must be between 1 and %d", u.Name, *b.Weight, balancer.MaxWeight)
		}
	}
	if cs := u.Consul; cs != nil {
		if cs.Service == "" {
			v.errf(up("consul"), "upstream %q: consul.service is required", u.Name)
		}
		if *cs.WarningWeight < 1 || *cs.WarningWeight > 100 {
			v.errf(up("consul", "warning_weight"), "upstream %q: consul.warning_weight must be a percentage in 1..100", u.Name)
		}
	}
	if hb := u.Health.Heartbeat; hb != nil && hb.TTL < minHeartbeatTTL {
		v.errf(up("health", "heartbeat", "ttl"), "upstream %q: health.heartbeat.ttl must be at least %s (how long a backend may go without a heartbeat)", u.Name, minHeartbeatTTL)
	}
	if a := u.Health.Active; a != nil {
		switch a.Type {
		case "http", "tcp":
			if len(a.Command) > 0 {
				v.errf(up("health", "active", "command"), "upstream %q: health.active.command is for type exec", u.Name)
			}
		case "exec":
			v.execCheck(u, a, up)
		default:
			v.errf(up("health", "active", "type"), "upstream %q: health.active.type %q: want http, tcp or exec", u.Name, a.Type)
		}
		if !strings.HasPrefix(a.Path, "/") {
			v.errf(up("health", "active", "path"), "upstream %q: health.active.path %q must start with /", u.Name, a.Path)
		}
		if _, _, err := ParseStatusRange(a.ExpectStatus); err != nil {
			v.errf(up("health", "active", "expect_status"), "upstream %q: %v", u.Name, err)
		}
		v.positive(up("health", "active", "interval"), "health.active.interval", a.Interval)
		v.positive(up("health", "active", "timeout"), "health.active.timeout", a.Timeout)
		v.positive(up("health", "active", "unhealthy_interval"), "health.active.unhealthy_interval", a.UnhealthyInterval)
		if a.Timeout > a.Interval {
			v.errf(up("health", "active", "timeout"), "upstream %q: health.active.timeout %s is longer than the interval %s", u.Name, a.Timeout, a.Interval)
		}
		if a.Rise < 1 {
			v.errf(up("health", "active", "rise"), "upstream %q: health.active.rise must be at least 1", u.Name)
		}
		if a.Fall < 1 {
			v.errf(up("health", "active", "fall"), "upstream %q: health.active.fall must be at least 1", u.Name)
		}
	}
	p := u.Health.Passive
	if *p.ConsecutiveFailures < 0 {
		v.errf(up("health", "passive", "consecutive_failures"), "upstream %q: consecutive_failures must be 0 (off) or more", u.Name)
	}
	v.positive(up("health", "passive", "ejection"), "health.passive.ejection", p.Ejection)
	if p.MaxEjection < p.Ejection {
		v.errf(up("health", "passive", "max_ejection"), "upstream %q: max_ejection %s is shorter than ejection %s", u.Name, p.MaxEjection, p.Ejection)
	}
	if *p.MaxEjectedPercent < 0 || *p.MaxEjectedPercent > 100 {
		v.errf(up("health", "passive", "max_ejected_percent"), "upstream %q: max_ejected_percent must be in 0..100", u.Name)
	}
	v.outliers(up, u.Name, p)
	v.positive(up("ewma_decay"), "ewma_decay", u.EWMADecay)
	b := u.Health.Breaker
	if b.FailureRatio <= 0 || b.FailureRatio > 1 {
		v.errf(up("health", "breaker", "failure_ratio"), "upstream %q: breaker.failure_ratio must be in (0, 1]", u.Name)
	}
	if b.MinRequests < 1 {
		v.errf(up("health", "breaker", "min_requests"), "upstream %q: breaker.min_requests must be at least 1", u.Name)
	}
	if b.HalfOpenRequests < 1 {
		v.errf(up("health", "breaker", "half_open_requests"), "upstream %q: breaker.half_open_requests must be at least 1", u.Name)
	}
	v.positive(up("health", "breaker", "window"), "health.breaker.window", b.Window)
	v.positive(up("health", "breaker", "open_timeout"), "health.breaker.open_timeout", b.OpenTimeout)
	if h := u.Retries.Hedge; h != nil {
		if h.After != HedgeAuto {
			v.positive(up("retries", "hedge", "after"), "retries.hedge.after", time.Duration(h.After))
		}
		if h.Max != 1 {
			v.errf(up("retries", "hedge", "max"), "upstream %q: retries.hedge.max must be 1 (the only value supported)", u.Name)
		}
	}
	if a := *u.Retries.Attempts; a < 0 || a > 10 {
		v.errf(up("retries", "attempts"), "upstream %q: retries.attempts must be in 0..10", u.Name)
	}
	v.positive(up("timeouts", "connect"), "timeouts.connect", u.Timeouts.Connect)
	v.positive(up("timeouts", "response"), "timeouts.response", u.Timeouts.Response)
	v.positive(up("timeouts", "idle"), "timeouts.idle", u.Timeouts.Idle)
	v.positive(up("timeouts", "tunnel_idle"), "timeouts.tunnel_idle", u.Timeouts.TunnelIdle)
	v.positive(up("timeouts", "tunnel_drain"), "timeouts.tunnel_drain", u.Timeouts.TunnelDrain)
	v.nonNegative(up("slow_start"), "slow_start", *u.SlowStart)
	if _, err := balancer.ParseFailback(u.Failback); err != nil {
		v.errf(up("failback"), "upstream %q: %v", u.Name, err)
	}
	v.nonNegative(up("dns_cache"), "dns_cache", *u.DNSCache)
	if t := *u.PanicThreshold; t < 0 || t > 100 {
		v.errf(up("panic_threshold"), "upstream %q: panic_threshold must be a percentage in 0..100", u.Name)
	}
	if u.MaxPendingConnects < 1 {
		v.errf(up("max_pending_connects"), "upstream %q: max_pending_connects must be positive", u.Name)
	}
	if u.MaxConnsPerBackend < 1 {
		v.errf(up("max_conns_per_backend"), "upstream %q: max_conns_per_backend must be positive", u.Name)
	}
}

func (v *validator) hostPort(path []any, what, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errf(path, "%s %q: want host:port", what, addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errf(path, "%s %q: bad port %q", what, addr, port)
	}
	if host == "" && strings.HasPrefix(what, "upstream") {
		v.errf(path, "%s %q: host is required", what, addr)
	}
}

func (v *validator) positive(path []any, what string, d time.Duration) {
	if d <= 0 {
		v.errf(path, "%s must be a positive duration, got %s", what, d)
	}
}

func (v *validator) nonNegative(path []any, what string, d time.Duration) {
	if d < 0 {
		v.errf(path, "%s must not be negative, got %s", what, d)
	}
}

// IsLoopback reports whether a listen address binds only loopback
// (127.0.0.0/8, ::1 or localhost).
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// ParseStatusRange parses "200-399" or "200" into an inclusive range.
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		b = a
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("expect_status %q: want a status or a range like 200-399", s)
	}
	return lo, hi, nil
}

// Token reads the secret named by env; "" when env is empty or unset.
func Token(env string) string {
	if env == "" {
		return ""
	}
	return os.Getenv(env)
}

// minHeartbeatTTL is the shortest heartbeat TTL: beats more often than
// this would be traffic, not liveness.
const minHeartbeatTTL = 100 * time.Millisecond

// outliers checks health.passive's outlier detection keys.
func (v *validator) outliers(up func(...any) []any, name string, p Passive) {
	pp := func(rest ...any) []any { return up(append([]any{"health", "passive"}, rest...)...) }
	switch p.CountAsFailure {
	case "5xx", "gateway":
	default:
		v.errf(pp("count_as_failure"), "upstream %q: health.passive.count_as_failure %q: want 5xx or gateway", name, p.CountAsFailure)
	}
	if f := *p.Latency.Factor; f != 0 && f <= 1 {
		v.errf(pp("latency", "factor"), "upstream %q: health.passive.latency.factor must be above 1 (or 0: off)", name)
	}
	if p.Latency.MinRequests < 1 {
		v.errf(pp("latency", "min_requests"), "upstream %q: health.passive.latency.min_requests must be at least 1", name)
	}
	v.positive(pp("latency", "interval"), "health.passive.latency.interval", p.Latency.Interval)
	if *p.SuccessRate.StdevFactor < 0 {
		v.errf(pp("success_rate", "stdev_factor"), "upstream %q: health.passive.success_rate.stdev_factor must be positive (or 0: off)", name)
	}
	if p.SuccessRate.MinimumHosts < 1 || p.SuccessRate.RequestVolume < 1 {
		v.errf(pp("success_rate"), "upstream %q: health.passive.success_rate: minimum_hosts and request_volume must be at least 1", name)
	}
	v.positive(pp("success_rate", "interval"), "health.passive.success_rate.interval", p.SuccessRate.Interval)
	if t := *p.FailurePercentage.Threshold; t < 0 || t > 100 {
		v.errf(pp("failure_percentage", "threshold"), "upstream %q: health.passive.failure_percentage.threshold must be in 0..100 (0: off)", name)
	}
	if p.FailurePercentage.MinimumHosts < 1 || p.FailurePercentage.RequestVolume < 1 {
		v.errf(pp("failure_percentage"), "upstream %q: health.passive.failure_percentage: minimum_hosts and request_volume must be at least 1", name)
	}
	v.positive(pp("failure_percentage", "interval"), "health.passive.failure_percentage.interval", p.FailurePercentage.Interval)
}
