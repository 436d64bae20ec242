package health

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"time"
)

// Defaults applied to zero-valued fields of Options. The config file's
// health keys take their defaults from these, so the binary and library
// users see the same values.
const (
	DefaultExpectStatusMin   = 200
	DefaultExpectStatusMax   = 399
	DefaultInterval          = 5 * time.Second
	DefaultTimeout           = 2 * time.Second
	DefaultRise              = 2
	DefaultFall              = 3
	DefaultJitter            = 0.1 // probe and ejection jitter, a fraction
	DefaultEjection          = 30 * time.Second
	DefaultMaxEjection       = 300 * time.Second
	DefaultMaxEjectedPercent = 50
	DefaultFailureRatio      = 0.5
	DefaultMinRequests       = 20
	DefaultWindow            = 10 * time.Second
	DefaultBucketPeriod      = time.Second
	DefaultOpenTimeout       = 10 * time.Second
	DefaultHalfOpenRequests  = 3
	// ExecPath is the PATH of script checks: their environment starts
	// clean.
	ExecPath = "/usr/local/bin:/usr/bin:/bin"
	// MaxExecChecks is how many script checks of one upstream run at once.
	MaxExecChecks = 4
)

// ErrCheckWarning marks a script check that exited 1: a warning. The backend
// stays eligible, degraded, at reduced weight.
var ErrCheckWarning = errors.New("check warning")

// Options configures a Checker for one upstream pool. The zero value runs no
// active probes, no passive ejection, and a circuit breaker with the defaults
// documented on BreakerOptions.
type Options struct {
	// Active configures active probing. nil means no probes: backends keep
	// Health "unknown" and stay eligible as far as probing is concerned.
	Active *ActiveOptions
	// Passive configures outlier detection from real traffic.
	Passive PassiveOptions
	// Breaker configures the per-backend circuit breaker.
	Breaker BreakerOptions
	// Heartbeat configures heartbeat checks (heartbeat.go). nil means none.
	Heartbeat *HeartbeatOptions
	// Logger receives the transitions the pool does not log itself (a first
	// probe verdict, a breaker closing, an ejection refused by the caps).
	// nil discards them. Reason changes are logged by balancer.Pool.Update.
	Logger *slog.Logger
}

// ActiveOptions configures active probes. Each backend is probed on its own
// connections (a new one per probe), never through the traffic pool.
type ActiveOptions struct {
	// Path is the HTTP path to GET, e.g. "/health". "" probes with a plain
	// TCP connect instead.
	Path string
	// Host is the Host header of HTTP probes. "" sends the backend address.
	Host string
	// TLS, if set, makes HTTP probes HTTPS with this client config (the
	// upstream's, so probes check what requests use); an empty ServerName
	// is the backend's host. TCP probes stay plain connects. nil: HTTP.
	TLS *tls.Config
	// ExpectStatusMin and ExpectStatusMax bound the statuses that pass,
	// inclusive. Zero values mean 200 and 399. Redirects are not followed.
	ExpectStatusMin, ExpectStatusMax int
	// Interval between probes of a backend. Default 5s.
	Interval time.Duration
	// UnhealthyInterval is used instead of Interval while a backend is
	// unhealthy, so recovery is noticed sooner. 0 means Interval.
	UnhealthyInterval time.Duration
	// Timeout bounds one probe (connect, request, response head). Default 2s.
	Timeout time.Duration
	// Rise is how many consecutive passes make an unhealthy backend healthy.
	// Default 2.
	Rise int
	// Fall is how many consecutive failures make a healthy backend
	// unhealthy. Default 3.
	Fall int
	// Jitter shortens each wait by a random fraction of up to this much of
	// the interval, so backends are not probed in lockstep (the wait never
	// exceeds the interval). 0 means 0.1; negative disables.
	Jitter float64
	// Command, when set, makes the probe a script check (exec.go): the
	// program and its arguments, run without a shell. Exit 0 passes, 1
	// warns (the backend stays eligible, degraded), anything else fails.
	Command []string
	// Upstream names the pool, for script checks' KELPIE_UPSTREAM.
	Upstream string
	// Probe, if set, replaces the built-in HTTP/TCP probe: it returns nil
	// when addr passes. It is called with a context bounded by Timeout.
	// Tests use it to script results.
	Probe func(ctx context.Context, addr string) error
}

// PassiveOptions configures outlier detection from the outcomes of real
// requests, reported through each backend's Guard.
type PassiveOptions struct {
	// ConsecutiveFailures is how many gateway errors in a row (connect
	// failure, reset, timeout, 502, 503, 504) eject a backend. 0 disables
	// passive ejection (the config layer's default is 5).
	ConsecutiveFailures int
	// Ejection is the base ejection time; the n-th ejection in a row lasts
	// n times this, capped at MaxEjection, plus jitter. Default 30s. Each
	// Ejection period without a new ejection lowers n by one.
	Ejection time.Duration
	// MaxEjection caps the ejection time before jitter. Default 300s.
	MaxEjection time.Duration
	// MaxEjectedPercent caps the share of the pool's non-drained members
	// that may be ejected at once. 0 means 50; values above 100 mean 100.
	// Independently, the last backend with no reason to be down is never
	// ejected.
	MaxEjectedPercent int
	// Jitter adds a random extra of up to this fraction of each ejection
	// time, so backends ejected together do not return together. 0 means
	// 0.1; negative disables.
	Jitter float64
	// KeepEjectedOnProbe turns off the default that a run of Rise passing
	// active probes since an ejection for gateway errors ends it (Envoy's
	// successful_active_health_check_uneject_host). Ejections for latency
	// or error rate are never ended by probes: a probe does not see them.
	KeepEjectedOnProbe bool
	// Latency, if set, ejects backends whose mean latency is an outlier.
	Latency *LatencyOptions
	// SuccessRate, if set, ejects backends whose success rate is an
	// outlier (Envoy's success_rate algorithm).
	SuccessRate *SuccessRateOptions
	// FailurePercentage, if set, ejects backends whose share of failures
	// is above a threshold (Envoy's failure_percentage algorithm).
	FailurePercentage *FailurePercentageOptions
	// CountGatewayOnly makes the two error-rate detectors count only
	// gateway errors (connect failure, reset, timeout, 502, 503, 504) as
	// failures. The default counts every 5xx status too. Client errors
	// (4xx) never count.
	CountGatewayOnly bool
}

// BreakerOptions configures the per-backend circuit breaker, a
// github.com/sony/gobreaker/v2 CircuitBreaker (its state machine decides;
// while it is closed kelpie admits without gobreaker's lock and counts the
// window itself, per core, driving gobreaker only with the failure that
// trips it: an attempt takes no lock and allocates nothing). It
// trips when, over
// the rolling Window, at least MinRequests attempts finished and at least
// FailureRatio of them were gateway errors. Open, it refuses every attempt
// for OpenTimeout; then half-open, it admits HalfOpenRequests trial
// attempts at a time: that many successes close it, one failure re-opens
// it. Refusals
// are not failures, and ResultLocal outcomes count for nothing.
type BreakerOptions struct {
	// Disabled turns the breaker off. The zero value has it on.
	Disabled bool
	// FailureRatio of finished attempts in the window that trips the
	// breaker, in (0, 1]. Default 0.5.
	FailureRatio float64
	// MinRequests is the least number of finished attempts in the window
	// before the ratio is considered. Default 20.
	MinRequests int
	// Window is the rolling window the counts cover. Default 10s.
	Window time.Duration
	// BucketPeriod is the window's granularity: counts expire one bucket
	// at a time. Default 1s (or Window, if shorter).
	BucketPeriod time.Duration
	// OpenTimeout is how long an open breaker refuses before going
	// half-open. Default 10s.
	OpenTimeout time.Duration
	// HalfOpenRequests is how many trial attempts a half-open breaker
	// admits at a time, and how many successes close it. Default 3.
	HalfOpenRequests int
}

// sweepEvery is the housekeeping period of Run: ejection expiry, ejection
// count decay and breaker polling (which is what moves an open breaker to
// half-open: gobreaker only does that when consulted).
const sweepEvery = time.Second

func (o Options) withDefaults() Options {
	if o.Active != nil {
		a := *o.Active
		def(&a.ExpectStatusMin, DefaultExpectStatusMin)
		def(&a.ExpectStatusMax, DefaultExpectStatusMax)
		def(&a.Interval, DefaultInterval)
		def(&a.UnhealthyInterval, a.Interval)
		def(&a.Timeout, DefaultTimeout)
		def(&a.Rise, DefaultRise)
		def(&a.Fall, DefaultFall)
		def(&a.Jitter, DefaultJitter)
		o.Active = &a
	}
	if o.Heartbeat != nil {
		h := *o.Heartbeat
		def(&h.Rise, DefaultRise)
		o.Heartbeat = &h
	}
	p := &o.Passive
	def(&p.Ejection, DefaultEjection)
	def(&p.MaxEjection, DefaultMaxEjection)
	def(&p.MaxEjectedPercent, DefaultMaxEjectedPercent)
	p.MaxEjectedPercent = min(p.MaxEjectedPercent, 100)
	def(&p.Jitter, DefaultJitter)
	p.outlierDefaults()
	b := &o.Breaker
	def(&b.FailureRatio, DefaultFailureRatio)
	def(&b.MinRequests, DefaultMinRequests)
	def(&b.Window, DefaultWindow)
	def(&b.BucketPeriod, min(DefaultBucketPeriod, b.Window))
	def(&b.OpenTimeout, DefaultOpenTimeout)
	def(&b.HalfOpenRequests, DefaultHalfOpenRequests)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// def replaces a zero value with d. Negative jitters stay negative: "off".
func def[T int | float64 | time.Duration](v *T, d T) {
	if *v == 0 {
		*v = d
	}
}
