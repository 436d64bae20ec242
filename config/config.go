// Package config loads and validates kelpie's YAML configuration. Only
// cmd/kelpie imports it: it translates a Config into each package's Options.
//
// Loading is strict: unknown keys, wrong types, bad durations, unknown
// balance names, routes to unknown upstreams and the like are all reported
// at once, each as "FILE:LINE: message".
package config

import "time"

// Config is a whole kelpie configuration after defaults are applied.
type Config struct {
	// Listen is the proxy's listen address. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// TrustedProxies are CIDRs whose X-Forwarded-For entries kelpie
	// believes when it works out the client address (ip_hash, logs).
	// Default: none; the TCP peer is the client.
	TrustedProxies []string   `yaml:"trusted_proxies"`
	Admin          Admin      `yaml:"admin"`
	Consul         Consul     `yaml:"consul"`
	Upstreams      []Upstream `yaml:"upstreams"`
	Routes         []Route    `yaml:"routes"`
	Limits         Limits     `yaml:"limits"`
	Shutdown       Shutdown   `yaml:"shutdown"`
	AccessLog      AccessLog  `yaml:"access_log"`
	Log            Log        `yaml:"log"`
	// AllowExecChecks permits health.active.type exec (script checks).
	// Default false: a config that may run programs must say so.
	AllowExecChecks bool `yaml:"allow_exec_checks"`
	// Cluster and HA: see cluster.go. Nil when absent.
	Cluster *Cluster `yaml:"cluster"`
	HA      *HA      `yaml:"ha"`
	// IO is how the proxy reads and writes its sockets: "raw" (default)
	// uses raw non-blocking system calls under Go's netpoller, "std" Go's
	// net.Conn Read and Write, the fallback should raw I/O misbehave (for
	// example after a fasthttp upgrade). Needs a restart.
	IO string `yaml:"io"`
	// TLS is the TLS listener; nil (omitted): none.
	TLS *TLS `yaml:"tls"`

	// Path is the file the config was loaded from.
	Path string `yaml:"-"`
}

// Admin is the admin endpoint: API, dashboard, metrics, health.
type Admin struct {
	// Listen default "127.0.0.1:9901".
	Listen string `yaml:"listen"`
	// TokenEnv names the environment variable holding the bearer token for
	// mutating calls. Required when Listen is not a loopback address.
	TokenEnv string `yaml:"token_env"`
	// StateFile, if set, keeps drained backends across restarts.
	StateFile string `yaml:"state_file"`
}

// Consul is the agent used by upstreams with a consul block.
type Consul struct {
	// Address default "127.0.0.1:8500".
	Address string `yaml:"address"`
	// TokenEnv default "CONSUL_HTTP_TOKEN".
	TokenEnv string `yaml:"token_env"`
	// Datacenter default: the agent's.
	Datacenter string `yaml:"datacenter"`
	// Stale allows any server to answer (default true).
	Stale *bool `yaml:"stale"`
	// EmptyGrace is how long an empty instance list must persist before it
	// empties a pool. Default 30s.
	EmptyGrace time.Duration `yaml:"empty_grace"`
}

// Upstream is one backend pool.
type Upstream struct {
	Name    string `yaml:"name"`
	Balance string `yaml:"balance"` // round_robin (default) | least_conn | ip_hash | hash | least_latency
	// EWMADecay is least_latency's latency averaging time constant. Default 10s.
	EWMADecay time.Duration `yaml:"ewma_decay"`
	Backends  []Backend     `yaml:"backends"`
	Consul    *ConsulSource `yaml:"consul"`
	Health    Health        `yaml:"health"`
	Retries   Retries       `yaml:"retries"`
	Timeouts  Timeouts      `yaml:"timeouts"`
	// SlowStart ramps a backend's weight from 10% over this long after it
	// becomes eligible. Default 30s; 0 disables.
	SlowStart *time.Duration `yaml:"slow_start"`
	// PanicThreshold, percent of primaries eligible below which traffic
	// spreads over all non-drained primaries. Default 50; 0 disables.
	PanicThreshold *int `yaml:"panic_threshold"`
	// Failback is auto (default: a recovered backend returns at once) or
	// manual (it waits as awaiting_ready for an operator's ready).
	Failback string `yaml:"failback"`
	// MaxConnsPerBackend caps connections to each backend. Default 1024.
	MaxConnsPerBackend int `yaml:"max_conns_per_backend"`
	// MaxPendingConnects caps each backend's unproven connections (connects
	// in progress, new ones before their first response byte). Default 64.
	MaxPendingConnects int `yaml:"max_pending_connects"`
	// DNSCache is how long the addresses of a backend named by DNS are
	// reused for new connections. Default 5s; 0 looks the name up for
	// every new connection.
	DNSCache *time.Duration `yaml:"dns_cache"`
	// HashOn is what balance: hash hashes: ip (default), path,
	// header:NAME, cookie:NAME or query:NAME.
	HashOn string `yaml:"hash_on"`
	// HashBalanceFactor bounds balance: hash loads, in percent of the
	// average in-flight load (e.g. 125); 0 (default) = no bound.
	HashBalanceFactor int `yaml:"hash_balance_factor"`
	// HashFallback balances requests without a hash key: round_robin
	// (default) or least_conn.
	HashFallback string `yaml:"hash_fallback"`
	// Sticky pins clients to backends with a cookie; omitted = off.
	Sticky *Sticky `yaml:"sticky"`
	// TLS makes the backends HTTPS; nil (omitted): plain HTTP.
	TLS *UpstreamTLS `yaml:"tls"`
}

// Sticky is cookie session affinity, on any balance.
type Sticky struct {
	Cookie     string         `yaml:"cookie"`      // cookie name; default kelpie_sticky
	TTL        time.Duration  `yaml:"ttl"`         // Max-Age; default 0 = session cookie
	Secure     bool           `yaml:"secure"`      // HTTPS only; default false
	HTTPOnly   *bool          `yaml:"http_only"`   // hidden from scripts; default true
	SameSite   string         `yaml:"same_site"`   // lax (default) | strict | none
	DrainGrace *time.Duration `yaml:"drain_grace"` // a drained backend keeps its sticky clients; default 5s; 0 = move at once
	// SecretEnv names an environment variable holding the key that signs
	// cookie values (HMAC-SHA256). Default "": a random key per process,
	// so cookies do not survive a restart nor work across instances.
	SecretEnv string `yaml:"secret_env"`
}

// Backend is a static pool member.
type Backend struct {
	Address string `yaml:"address"`
	Weight  *int   `yaml:"weight"` // default 1
	Backup  bool   `yaml:"backup"`
}

// ConsulSource takes members from a Consul service.
type ConsulSource struct {
	Service    string `yaml:"service"`
	Tag        string `yaml:"tag"`
	Datacenter string `yaml:"datacenter"`
	// Warning includes instances whose worst check is "warning". Default
	// false: only instances whose checks all pass.
	Warning bool `yaml:"warning"`
	// WarningWeight is the percentage of a warning instance's Consul
	// Weights.Warning it is routed with. Default 10.
	WarningWeight *int `yaml:"warning_weight"`
}

// Health configures active probes, passive ejection and the breaker.
type Health struct {
	Active  *Active `yaml:"active"`
	Passive Passive `yaml:"passive"`
	Breaker Breaker `yaml:"breaker"`
	// Heartbeat checks; omitted means none.
	Heartbeat *Heartbeat `yaml:"heartbeat"`
}

// Heartbeat checks: each backend (or its agent) calls
// PUT /api/v1/upstreams/{name}/backends/{address}/heartbeat at least every
// TTL; a backend that misses it leaves rotation (heartbeat_missed) until
// rise beats in a row (health.active.rise, else 2) bring it back.
type Heartbeat struct {
	TTL time.Duration `yaml:"ttl"` // required
}

// Active probing; omitted means none.
type Active struct {
	Type string `yaml:"type"` // http (default) | tcp | exec
	// Command is the program and arguments of an exec check (no shell);
	// needs allow_exec_checks.
	Command      []string      `yaml:"command,omitempty"`
	Path         string        `yaml:"path"`          // default /health
	Host         string        `yaml:"host"`          // Host header; default the backend address
	ExpectStatus string        `yaml:"expect_status"` // default "200-399"
	Interval     time.Duration `yaml:"interval"`      // default 5s
	Timeout      time.Duration `yaml:"timeout"`       // default 2s
	Rise         int           `yaml:"rise"`          // default 2
	Fall         int           `yaml:"fall"`          // default 3
	// UnhealthyInterval probes unhealthy backends faster. Default: Interval.
	UnhealthyInterval time.Duration `yaml:"unhealthy_interval"`
}

// Passive outlier detection from real traffic.
type Passive struct {
	ConsecutiveFailures *int          `yaml:"consecutive_failures"` // default 5; 0 disables
	Ejection            time.Duration `yaml:"ejection"`             // default 30s
	MaxEjection         time.Duration `yaml:"max_ejection"`         // default 300s
	MaxEjectedPercent   *int          `yaml:"max_ejected_percent"`  // default 50
	// UnejectOnProbe: rise passing active probes end an ejection for
	// gateway errors. Default true.
	UnejectOnProbe *bool `yaml:"uneject_on_probe"`
	// CountAsFailure is what success_rate and failure_percentage count as
	// a failure: "5xx" (default: every 5xx status and gateway error) or
	// "gateway" (connect failure, reset, timeout, 502, 503, 504).
	CountAsFailure    string             `yaml:"count_as_failure"`
	Latency           *LatencyOutlier    `yaml:"latency"`
	SuccessRate       *SuccessRate       `yaml:"success_rate"`
	FailurePercentage *FailurePercentage `yaml:"failure_percentage"`
}

// LatencyOutlier ejects a backend whose mean latency over an interval is
// more than factor x the pool's median (reason slow).
type LatencyOutlier struct {
	Factor      *float64      `yaml:"factor"`       // default 3; 0 = off
	MinRequests int           `yaml:"min_requests"` // default 50
	Interval    time.Duration `yaml:"interval"`     // default 10s
}

// SuccessRate ejects a backend whose success rate is more than
// stdev_factor standard deviations below the pool's mean (reason errors).
type SuccessRate struct {
	StdevFactor   *float64      `yaml:"stdev_factor"`   // default 1.9; 0 = off
	MinimumHosts  int           `yaml:"minimum_hosts"`  // default 5
	RequestVolume int           `yaml:"request_volume"` // default 100
	Interval      time.Duration `yaml:"interval"`       // default 10s
}

// FailurePercentage ejects a backend whose failures are more than
// threshold percent of its requests (reason errors).
type FailurePercentage struct {
	Threshold     *int          `yaml:"threshold"`      // percent; default 0 = off
	MinimumHosts  int           `yaml:"minimum_hosts"`  // default 5
	RequestVolume int           `yaml:"request_volume"` // default 50
	Interval      time.Duration `yaml:"interval"`       // default 10s
}

// Breaker is the per-backend circuit breaker.
type Breaker struct {
	Enabled          *bool         `yaml:"enabled"`            // default true
	FailureRatio     float64       `yaml:"failure_ratio"`      // default 0.5
	MinRequests      int           `yaml:"min_requests"`       // default 20
	Window           time.Duration `yaml:"window"`             // default 10s
	OpenTimeout      time.Duration `yaml:"open_timeout"`       // default 10s
	HalfOpenRequests int           `yaml:"half_open_requests"` // default 3
}

// Retries re-send a failed request to another backend.
type Retries struct {
	Attempts *int `yaml:"attempts"` // extra tries; default 1
	// Hedge, if set, hedges idempotent requests; omitted means never.
	Hedge *Hedge `yaml:"hedge"`
}

// Hedge sends one more attempt to another backend when the first has not
// answered within After; the first answer wins.
type Hedge struct {
	After HedgeDelay `yaml:"after"` // required: a positive duration, or auto
	Max   int        `yaml:"max"`   // hedged attempts per request; only 1 is supported (default)
}

// Timeouts towards backends.
type Timeouts struct {
	Connect  time.Duration `yaml:"connect"`  // default 3s
	Response time.Duration `yaml:"response"` // until the response head; default 15s
	Idle     time.Duration `yaml:"idle"`     // idle upstream keep-alive; default 4s
	// TunnelIdle closes a WebSocket/Upgrade tunnel idle this long either
	// way. Default 10m.
	TunnelIdle time.Duration `yaml:"tunnel_idle"`
	// TunnelDrain is how long a tunnel outlives its backend's drain or
	// removal before kelpie closes it. Default 30s.
	TunnelDrain time.Duration `yaml:"tunnel_drain"`
}

// Route sends matching requests to an upstream.
type Route struct {
	Host       string `yaml:"host"`        // exact host, port ignored; "" = any
	PathPrefix string `yaml:"path_prefix"` // longest matching prefix wins; default "/"
	Upstream   string `yaml:"upstream"`
}

// Limits protect the proxy listener.
type Limits struct {
	MaxHeaderBytes int           `yaml:"max_header_bytes"` // default 16384 (431 beyond)
	MaxURIBytes    int           `yaml:"max_uri_bytes"`    // default 8192 (414 beyond)
	MaxHeaders     int           `yaml:"max_headers"`      // default 100
	MaxBodyBytes   int64         `yaml:"max_body_bytes"`   // default 0 = unlimited, streamed (413 beyond)
	ReadTimeout    time.Duration `yaml:"read_timeout"`     // request head and body; default 60s
	WriteTimeout   time.Duration `yaml:"write_timeout"`    // default 0 = none
	IdleTimeout    time.Duration `yaml:"idle_timeout"`     // keep-alive idle; default 120s
	MaxConns       int           `yaml:"max_conns"`        // concurrent client connections; default 10000
	MaxTunnels     int           `yaml:"max_tunnels"`      // open WebSocket/Upgrade tunnels; default 10000 (503 beyond)
}

// Shutdown is the graceful stop on SIGTERM/SIGINT.
type Shutdown struct {
	// ReadinessDelay keeps accepting while /readyz already says 503, for
	// load balancers in front to notice. Default 0.
	ReadinessDelay time.Duration `yaml:"readiness_delay"`
	// Grace bounds how long in-flight requests may take to finish. Default 30s.
	Grace time.Duration `yaml:"grace"`
}

// AccessLog is the structured access log.
type AccessLog struct {
	Enabled bool    `yaml:"enabled"` // default false
	Sample  float64 `yaml:"sample"`  // share of requests logged, 0 < s <= 1; default 1
	Path    string  `yaml:"path"`    // default stderr
}

// Log is kelpie's own log.
type Log struct {
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Format string `yaml:"format"` // text (default) | json
}
