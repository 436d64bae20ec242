package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/metrics"
)

// Defaults applied to zero-valued fields of Upstream and Options. The config
// file (limits, timeouts, max_conns_per_backend) takes its defaults from
// these, so the binary and library users see the same values.
const (
	DefaultConnectTimeout     = 3 * time.Second
	DefaultResponseTimeout    = 15 * time.Second
	DefaultUpstreamWrite      = 30 * time.Second
	DefaultMaxConnsPerBackend = 1024
	DefaultMaxPendingConnects = 64
	DefaultIdleConnTimeout    = 4 * time.Second
	DefaultMaxHeaderBytes     = 16 << 10
	DefaultMaxURIBytes        = 8 << 10
	DefaultMaxHeaderCount     = 100
	DefaultReadTimeout        = 60 * time.Second
	DefaultIdleTimeout        = 120 * time.Second
	DefaultConcurrency        = 10000
	DefaultRetryAfter         = time.Second
	DefaultTunnelIdle         = 10 * time.Minute
	DefaultTunnelDrain        = 30 * time.Second
	DefaultMaxTunnels         = 10000
)

// DefaultWriteTimeout is Options.WriteTimeout's default: none, so slow
// clients can finish long downloads.
const DefaultWriteTimeout time.Duration = 0

// Upstream holds the data-path settings of one upstream. It is read-only once
// handed to New or SetRoutes; to change it, pass a new Upstream in a new route
// set. Backends keep their connections across such changes unless the
// connection settings (timeouts, MaxConnsPerBackend, Dial) differ.
type Upstream struct {
	// Pool is the upstream's backend pool. Required.
	Pool *balancer.Pool
	// Stats receives the upstream's request figures (latency, retries,
	// 503s, status codes per backend); metrics.Metrics.Upstream gives the
	// ones /metrics reads. nil: New or SetRoutes sets a private one.
	Stats *metrics.UpstreamStats
	// ConnectTimeout bounds one TCP connect to a backend. Default 3s.
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for the first byte of the response
	// after the request has been written, and then every gap between bytes
	// of the response (so a slow but live download is not cut off, while a
	// backend that stalls mid-body is). Expiry before any response byte is a
	// timeout: 504. Default 15s.
	ResponseTimeout time.Duration
	// WriteTimeout bounds every gap between writes of the request to the
	// backend (a backend that stops reading an upload). Default 30s.
	WriteTimeout time.Duration
	// Retries is the number of extra attempts, each on a different backend.
	// 0 means none (the config file's default is 1). Connect failures are
	// retried for every method; resets, timeouts and 502/503/504 only for
	// idempotent methods whose body (if any) was not yet sent.
	Retries int
	// HedgeAfter, when positive, hedges idempotent requests whose body
	// kelpie holds whole: if the first attempt has not answered within
	// this, one more attempt goes to another backend and the first answer
	// wins (see hedge). 0 (the default) never hedges.
	HedgeAfter time.Duration
	// HedgeAuto, when true, hedges like HedgeAfter (which it overrides)
	// with a delay derived from the upstream's recent p95 response time,
	// clamped to [MinAutoHedge, ResponseTimeout/2]; DefaultAutoHedge until
	// there are enough requests to measure (see autoHedge).
	HedgeAuto bool
	// MaxConnsPerBackend caps open connections to one backend. A backend at
	// its cap is skipped as if it refused the connection (not counted
	// against it). Default 1024.
	MaxConnsPerBackend int
	// MaxPendingConnects caps a backend's unproven connections: connects
	// in progress plus new connections that have not yet delivered their
	// first response byte. A backend whose connections all hang (frozen,
	// SYNs black-holed) then gets at most this many, not one per waiting
	// request. A request that finds the cap reached fails over to another
	// backend like one at MaxConnsPerBackend: nothing counts against the
	// backend (503 when no other backend is left). Reused connections need
	// no slot. Default 64 (DefaultMaxPendingConnects).
	MaxPendingConnects int
	// IdleConnTimeout closes pooled keep-alive connections idle this long.
	// Keep it below the backends' own keep-alive timeout. Default 4s.
	IdleConnTimeout time.Duration
	// DNSCache is how long a backend named by DNS (host:port with a name,
	// such as a container or a Kubernetes Service) keeps its looked-up
	// addresses before a new connection looks the name up again. The
	// addresses are also forgotten as soon as none of them accepts a
	// connection, so a name that moved is followed at the next connect.
	// A name with several addresses stays one backend; its new connections
	// rotate over them. Default 5s (DefaultDNSCache); negative: look the
	// name up for every new connection.
	DNSCache time.Duration
	// HashOn is what a pool with the hash algorithm hashes; the zero value
	// hashes the client IP. Other algorithms ignore it.
	HashOn HashOn
	// Sticky, if set, pins each client to a backend with a cookie (see
	// Sticky). nil: no stickiness.
	Sticky *Sticky
	// Dial, if set, opens connections to backends instead of TCP (tests and
	// benchmarks use in-memory listeners). timeout is ConnectTimeout.
	Dial func(addr string, timeout time.Duration) (net.Conn, error)
	// TunnelIdle closes a tunnel (an upgraded connection: WebSocket) in
	// which no byte went either way for this long. Default 10m.
	TunnelIdle time.Duration
	// TunnelDrain is how long a tunnel may stay open once its backend is
	// drained or has left the pool; then kelpie closes it. A tunnel counts
	// as in flight on its backend until it ends. Default 30s.
	TunnelDrain time.Duration
	// TLS, if set, makes connections to backends TLS (HTTPS backends) with
	// this client config, the handshake bounded by ConnectTimeout. An empty
	// ServerName is filled in with each backend's host. The config must not
	// be changed once handed over; a new pointer (a reload) makes new
	// connections. nil (the default): plain TCP.
	TLS *tls.Config

	// newTransport, if set, makes each backend's transport instead of a
	// fasthttp.HostClient: tests script backends through it.
	newTransport func(addr string) transport
	// lookup, if set, resolves backend names instead of the system
	// resolver: tests script DNS answers through it.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// auto is the automatic hedge delay's state (HedgeAuto).
	auto autoHedge
}

// Route sends requests for Host (exact, case-insensitive, port ignored; ""
// means any host) whose raw path starts with PathPrefix (byte prefix, no
// normalisation; "" matches everything) to Upstream.
type Route struct {
	Host       string
	PathPrefix string
	Upstream   *Upstream
}

// Options configures the listener side of a Proxy. The zero value is usable:
// every zero field takes the default named in its comment.
type Options struct {
	// MaxHeaderBytes caps the request header block (excluding the request
	// line); larger requests get 431. Default 16 KiB.
	MaxHeaderBytes int
	// MaxURIBytes caps the request target; longer gets 414. Default 8 KiB.
	// A request line plus headers larger than MaxHeaderBytes+MaxURIBytes is
	// refused by the parser with 431.
	MaxURIBytes int
	// MaxHeaderCount caps the number of header fields; more gets 431.
	// Default 100.
	MaxHeaderCount int
	// MaxBodyBytes caps request bodies: a larger Content-Length gets 413
	// before anything is sent upstream; a chunked body that grows past it is
	// cut off (413 if no response has started, else the connection closes).
	// 0 means unlimited. Bodies are streamed either way.
	MaxBodyBytes int64
	// ReadTimeout bounds reading one request's head from the client, from its
	// first byte (slowloris); a timeout closes the connection (408).
	// Default 60s.
	ReadTimeout time.Duration
	// IdleTimeout closes client keep-alive connections idle this long.
	// Default 120s. Meanwhile a plain (not TLS) connection idle between
	// requests for one to two seconds is parked: no goroutine, no buffers,
	// only its socket on an epoll set (idle.go).
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one response to the client. Default none
	// (0; negative also means none), so slow clients can finish long
	// downloads; ReadTimeout and IdleTimeout still bound idle clients.
	WriteTimeout time.Duration
	// Concurrency caps concurrent client connections, parked idle ones
	// included; beyond it new ones get 503 and are closed. Default 10000.
	Concurrency int
	// TrustedProxies are the peers whose X-Forwarded-For is believed when
	// finding the client IP (for ip_hash and the access log): the rightmost
	// address not inside one of these prefixes is the client. Default: trust
	// nothing, the client is the TCP peer.
	TrustedProxies []netip.Prefix
	// RetryAfter is the Retry-After sent with 503 when no backend is
	// eligible. Default 1s (sent as whole seconds, at least 1).
	RetryAfter time.Duration
	// AccessLog, if set, receives one record per sampled request. nil (the
	// default) logs no requests.
	AccessLog *slog.Logger
	// AccessLogSample logs one request in this many. 0 or 1 logs every
	// request (when AccessLog is set).
	AccessLogSample int
	// Logger receives errors and state transitions. nil discards them.
	Logger *slog.Logger
	// FencingHeader, when set (e.g. "X-Kelpie-Fencing-Token"), is a request
	// header carrying FencingToken's value to backends, so that a backend
	// can refuse a request from a leader an HA failover has replaced. A
	// client-sent header of that name is always removed; with FencingToken
	// nil or returning 0 (not leading) none is sent. Default: none.
	FencingHeader string
	// FencingToken returns the current fencing token; it is called once per
	// request and must be cheap (an atomic load).
	FencingToken func() uint64
	// IO is how the proxy reads and writes its sockets, client and backend
	// alike: IORaw (the default, "" too) uses raw non-blocking system calls
	// under Go's netpoller and lazy deadlines; IOStd uses net.Conn's own
	// Read and Write (deadlines stay lazy). IOStd is the switch back when
	// raw I/O misbehaves, e.g. after a fasthttp upgrade
	// (proxy/internal/rawio lists what it relies on). Read at New.
	IO IOMode
	// MaxTunnels caps open tunnels (upgraded connections, WebSockets)
	// across all upstreams; an upgrade request beyond it gets 503.
	// Tunnels do not count against Concurrency. Default 10000.
	MaxTunnels int
	// HTTPSRedirectPort, if set, makes every listener served by Serve (plain
	// HTTP) answer 308 with the same host and target on https at this port
	// (omitted when 443); TLS listeners (ServeTLS) proxy as usual. Default 0:
	// no redirect.
	HTTPSRedirectPort int
}

// IOMode is how the proxy does socket I/O (Options.IO).
type IOMode string

// The I/O modes.
const (
	IORaw IOMode = "raw" // raw system calls under the netpoller (default)
	IOStd IOMode = "std" // net.Conn's Read and Write
)

// DefaultIO is the I/O mode used when Options.IO is empty.
const DefaultIO = IORaw

func (o Options) withDefaults() Options {
	if o.IO == "" {
		o.IO = DefaultIO
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt(&o.MaxHeaderBytes, DefaultMaxHeaderBytes)
	defInt(&o.MaxURIBytes, DefaultMaxURIBytes)
	defInt(&o.MaxHeaderCount, DefaultMaxHeaderCount)
	defInt(&o.Concurrency, DefaultConcurrency)
	defInt(&o.MaxTunnels, DefaultMaxTunnels)
	def(&o.ReadTimeout, DefaultReadTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	if o.WriteTimeout < 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	def(&o.RetryAfter, DefaultRetryAfter)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AccessLogSample <= 0 {
		o.AccessLogSample = 1
	}
	return o
}

// settings is an Upstream with defaults applied; it also keys the
// per-backend client so a reload with new settings gets a new one.
type settings struct {
	connect, response, write, idle time.Duration
	maxConns, maxPending           int
	dnsCache                       time.Duration
	tls                            *tls.Config
	stdIO                          bool // Options.IO is IOStd
}

func (u *Upstream) settings() settings {
	s := settings{connect: u.ConnectTimeout, response: u.ResponseTimeout, write: u.WriteTimeout, idle: u.IdleConnTimeout,
		maxConns: u.MaxConnsPerBackend, maxPending: u.MaxPendingConnects, dnsCache: u.DNSCache, tls: u.TLS}
	if s.connect <= 0 {
		s.connect = DefaultConnectTimeout
	}
	if s.response <= 0 {
		s.response = DefaultResponseTimeout
	}
	if s.write <= 0 {
		s.write = DefaultUpstreamWrite
	}
	if s.idle <= 0 {
		s.idle = DefaultIdleConnTimeout
	}
	if s.maxConns <= 0 {
		s.maxConns = DefaultMaxConnsPerBackend
	}
	if s.maxPending <= 0 {
		s.maxPending = DefaultMaxPendingConnects
	}
	if s.dnsCache == 0 {
		s.dnsCache = DefaultDNSCache
	}
	return s
}
