package config

import (
	"fmt"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/discovery"
	"github.com/kelpie-lb/kelpie/health"
	"github.com/kelpie-lb/kelpie/proxy"
)

// Every default has one source. Keys that map onto a package's Options take
// that package's Default constants (proxy, health, discovery, balancer), so
// the binary, `kelpie config -defaults`, config.example.yaml and library
// users all see the same values. The constants below are the config file's
// own: settings no package has (addresses, logging, shutdown), and features
// whose Options zero value means "off" and which the config file turns on.
const (
	DefaultListen         = "127.0.0.1:8080" // listen
	DefaultAdminListen    = "127.0.0.1:9901" // admin.listen
	DefaultConsulAddress  = "127.0.0.1:8500" // consul.address
	DefaultConsulTokenEnv = "CONSUL_HTTP_TOKEN"
	DefaultGrace          = 30 * time.Second // shutdown.grace
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "text"
	DefaultTLSMinVersion  = "1.2" // tls.min_version

	// DefaultWarningWeight is consul.warning_weight, in percent
	// (discovery.WatchSpec's zero value means 100).
	DefaultWarningWeight = 10
	// DefaultProbeType and DefaultProbePath are health.active's type and
	// path (health.ActiveOptions' zero Path probes with a TCP connect).
	DefaultProbeType = "http"
	DefaultProbePath = "/health"
	// DefaultConsecutiveFailures is health.passive.consecutive_failures
	// (health.PassiveOptions' zero value disables passive ejection).
	DefaultConsecutiveFailures = 5
	// DefaultRetries is retries.attempts (proxy.Upstream's zero value
	// retries nothing).
	DefaultRetries = 1
	// DefaultSlowStart and DefaultPanicThreshold are slow_start and
	// panic_threshold (balancer.Options' zero values disable both).
	DefaultSlowStart      = 30 * time.Second
	DefaultPanicThreshold = 50
	// DefaultFailback is failback (balancer.Options' zero value is auto).
	DefaultFailback = "auto"
	// DefaultCountAsFailure is health.passive.count_as_failure.
	DefaultCountAsFailure = "5xx"
	// DefaultFailurePercentThreshold is failure_percentage.threshold: off,
	// as Envoy's failure percentage is not enforced by default
	// (health.DefaultFailurePercentThresh, 85, applies when it is on).
	DefaultFailurePercentThreshold = 0
	// DefaultHashOn is hash_on (proxy.HashOn's zero value is the same).
	DefaultHashOn = "ip"
	// DefaultStickySameSite is sticky.same_site (proxy.Sticky's zero
	// value sends no SameSite attribute).
	DefaultStickySameSite = "lax"
)

func ptr[T any](v T) *T { return &v }

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// applyDefaults fills every unset key with its documented default.
func applyDefaults(c *Config) {
	orDefault(&c.Listen, DefaultListen)
	orDefault(&c.Admin.Listen, DefaultAdminListen)
	orDefault(&c.Consul.Address, DefaultConsulAddress)
	orDefault(&c.Consul.TokenEnv, DefaultConsulTokenEnv)
	if c.Consul.Stale == nil {
		c.Consul.Stale = ptr(true) // discovery.ConsulOptions' zero RequireConsistent
	}
	orDefault(&c.Consul.EmptyGrace, discovery.DefaultEmptyGrace)
	orDefault(&c.Limits.MaxHeaderBytes, proxy.DefaultMaxHeaderBytes)
	orDefault(&c.Limits.MaxURIBytes, proxy.DefaultMaxURIBytes)
	orDefault(&c.Limits.MaxHeaders, proxy.DefaultMaxHeaderCount)
	orDefault(&c.Limits.ReadTimeout, proxy.DefaultReadTimeout)
	orDefault(&c.Limits.WriteTimeout, proxy.DefaultWriteTimeout)
	orDefault(&c.Limits.IdleTimeout, proxy.DefaultIdleTimeout)
	orDefault(&c.Limits.MaxConns, proxy.DefaultConcurrency)
	orDefault(&c.IO, string(proxy.DefaultIO))
	orDefault(&c.Limits.MaxTunnels, proxy.DefaultMaxTunnels)
	orDefault(&c.Shutdown.Grace, DefaultGrace)
	orDefault(&c.AccessLog.Sample, 1)
	orDefault(&c.Log.Level, DefaultLogLevel)
	orDefault(&c.Log.Format, DefaultLogFormat)
	if c.TLS != nil {
		orDefault(&c.TLS.MinVersion, DefaultTLSMinVersion)
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		orDefault(&u.Balance, balancer.RoundRobin.String())
		orDefault(&u.EWMADecay, balancer.DefaultEWMADecay)
		orDefault(&u.HashOn, DefaultHashOn)
		orDefault(&u.HashFallback, balancer.RoundRobin.String())
		if s := u.Sticky; s != nil {
			orDefault(&s.Cookie, proxy.DefaultStickyCookie)
			if s.HTTPOnly == nil {
				s.HTTPOnly = ptr(true)
			}
			orDefault(&s.SameSite, DefaultStickySameSite)
			if s.DrainGrace == nil {
				s.DrainGrace = ptr(proxy.DefaultStickyDrainGrace)
			}
		}
		for j := range u.Backends {
			if u.Backends[j].Weight == nil {
				u.Backends[j].Weight = ptr(1)
			}
		}
		if u.Consul != nil && u.Consul.WarningWeight == nil {
			u.Consul.WarningWeight = ptr(DefaultWarningWeight)
		}
		if a := u.Health.Active; a != nil {
			orDefault(&a.Type, DefaultProbeType)
			orDefault(&a.Path, DefaultProbePath)
			orDefault(&a.ExpectStatus, fmt.Sprintf("%d-%d", health.DefaultExpectStatusMin, health.DefaultExpectStatusMax))
			orDefault(&a.Interval, health.DefaultInterval)
			orDefault(&a.Timeout, health.DefaultTimeout)
			orDefault(&a.Rise, health.DefaultRise)
			orDefault(&a.Fall, health.DefaultFall)
			orDefault(&a.UnhealthyInterval, a.Interval)
		}
		p := &u.Health.Passive
		if p.ConsecutiveFailures == nil {
			p.ConsecutiveFailures = ptr(DefaultConsecutiveFailures)
		}
		orDefault(&p.Ejection, health.DefaultEjection)
		orDefault(&p.MaxEjection, health.DefaultMaxEjection)
		if p.MaxEjectedPercent == nil {
			p.MaxEjectedPercent = ptr(health.DefaultMaxEjectedPercent)
		}
		outlierDefaults(p)
		b := &u.Health.Breaker
		if b.Enabled == nil {
			b.Enabled = ptr(true)
		}
		orDefault(&b.FailureRatio, health.DefaultFailureRatio)
		orDefault(&b.MinRequests, health.DefaultMinRequests)
		orDefault(&b.Window, health.DefaultWindow)
		orDefault(&b.OpenTimeout, health.DefaultOpenTimeout)
		orDefault(&b.HalfOpenRequests, health.DefaultHalfOpenRequests)
		if u.Retries.Attempts == nil {
			u.Retries.Attempts = ptr(DefaultRetries)
		}
		if h := u.Retries.Hedge; h != nil {
			orDefault(&h.Max, 1)
		}
		orDefault(&u.Timeouts.Connect, proxy.DefaultConnectTimeout)
		orDefault(&u.Timeouts.Response, proxy.DefaultResponseTimeout)
		orDefault(&u.Timeouts.Idle, proxy.DefaultIdleConnTimeout)
		orDefault(&u.Timeouts.TunnelIdle, proxy.DefaultTunnelIdle)
		orDefault(&u.Timeouts.TunnelDrain, proxy.DefaultTunnelDrain)
		if u.SlowStart == nil {
			u.SlowStart = ptr(DefaultSlowStart)
		}
		orDefault(&u.Failback, DefaultFailback)
		if u.PanicThreshold == nil {
			u.PanicThreshold = ptr(DefaultPanicThreshold)
		}
		orDefault(&u.MaxConnsPerBackend, proxy.DefaultMaxConnsPerBackend)
		orDefault(&u.MaxPendingConnects, proxy.DefaultMaxPendingConnects)
		if u.DNSCache == nil {
			u.DNSCache = ptr(proxy.DefaultDNSCache)
		}
	}
	for i := range c.Routes {
		orDefault(&c.Routes[i].PathPrefix, "/")
	}
	clusterDefaults(c)
}

// Defaults returns the config a file gets from defaults alone, every key
// filled in. A file needs at least one upstream, so this one has an example
// upstream "web" with a static backend, a Consul service, active probes and
// a route: together they show every upstream key's default.
func Defaults() *Config {
	c := &Config{
		Upstreams: []Upstream{{
			Name:     "web",
			Backends: []Backend{{Address: "127.0.0.1:9001"}},
			Consul:   &ConsulSource{Service: "web"},
			Health:   Health{Active: &Active{}},
		}},
		Routes: []Route{{Upstream: "web"}},
	}
	applyDefaults(c)
	return c
}

// outlierDefaults fills health.passive's outlier detection keys: latency
// and success rate on, failure percentage off.
func outlierDefaults(p *Passive) {
	if p.UnejectOnProbe == nil {
		p.UnejectOnProbe = ptr(true)
	}
	orDefault(&p.CountAsFailure, DefaultCountAsFailure)
	if p.Latency == nil {
		p.Latency = &LatencyOutlier{}
	}
	if p.Latency.Factor == nil {
		p.Latency.Factor = ptr(health.DefaultLatencyFactor)
	}
	orDefault(&p.Latency.MinRequests, health.DefaultLatencyMinRequests)
	orDefault(&p.Latency.Interval, health.DefaultOutlierInterval)
	if p.SuccessRate == nil {
		p.SuccessRate = &SuccessRate{}
	}
	if p.SuccessRate.StdevFactor == nil {
		p.SuccessRate.StdevFactor = ptr(health.DefaultStdevFactor)
	}
	orDefault(&p.SuccessRate.MinimumHosts, health.DefaultSuccessRateMinHosts)
	orDefault(&p.SuccessRate.RequestVolume, health.DefaultSuccessRateVolume)
	orDefault(&p.SuccessRate.Interval, health.DefaultOutlierInterval)
	if p.FailurePercentage == nil {
		p.FailurePercentage = &FailurePercentage{}
	}
	if p.FailurePercentage.Threshold == nil {
		p.FailurePercentage.Threshold = ptr(DefaultFailurePercentThreshold)
	}
	orDefault(&p.FailurePercentage.MinimumHosts, health.DefaultFailurePercentMinHosts)
	orDefault(&p.FailurePercentage.RequestVolume, health.DefaultFailurePercentVolume)
	orDefault(&p.FailurePercentage.Interval, health.DefaultOutlierInterval)
}
