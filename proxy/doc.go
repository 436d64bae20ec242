// Package proxy is kelpie's data path: a fasthttp HTTP/1.1 reverse proxy that
// validates each request, routes it to an upstream, picks a backend from the
// upstream's balancer.Pool and forwards it over a pooled keep-alive
// connection, retrying on other backends where that is safe.
//
// # Routing
//
// A Route matches the Host header exactly (case-insensitive, port ignored;
// "" matches any host) and the raw request path by byte prefix, longest
// first. Routes for the request's host are tried before any-host routes. No
// match is 404. Routing reads the same raw bytes that are forwarded: paths
// are never decoded or normalised (no "..", "//" or %-decoding), so kelpie
// and the backend always agree on the path. Only origin-form targets ("/...")
// and "OPTIONS *" are accepted; "OPTIONS *" routes as the path "/".
//
// # Request hygiene
//
// Before anything goes upstream, requests that are ambiguous or malformed are
// answered 400 with Connection: close: Content-Length with Transfer-Encoding,
// duplicate or non-numeric Content-Length, a Transfer-Encoding whose chunked
// is missing from the end, repeated or has parameters, Transfer-Encoding on
// HTTP/1.0, obs-fold continuation lines, a bare LF in a request head, chunk
// line or trailer (seen on the raw connection, so an LF-only head is answered
// at once rather than at the read timeout), bare CR, NUL and other control
// bytes in headers, whitespace before a colon, more than one Host, HTTP/1.1
// without Host, a Host with characters outside RFC 3986, absolute-form
// targets, a '%' in the target not followed by two hex digits, and a chunked body that is malformed, carries a forbidden trailer
// field or ends with the connection, when that shows in its first 4 KiB
// (later, the upstream request is cut off). A transfer coding kelpie does not
// implement is 501, an HTTP version other than 1.0 and 1.1 is 505, CONNECT
// is 405. Limits (Options): a request target over MaxURIBytes is 414, a
// header block over MaxHeaderBytes or more than MaxHeaderCount fields is 431,
// a body over MaxBodyBytes is 413.
//
// Every request goes upstream as HTTP/1.1. An HTTP/1.0 request without Host
// routes as having none and is sent with the address the client connected
// to as its Host. No header is added but kelpie's forwarding headers (no
// default Content-Type or User-Agent, no Server on responses); a bodyless
// request other than GET or HEAD gets Content-Length: 0 (fasthttp's client
// always frames such a request; it declares the same empty body). Header
// names keep the sender's spelling both ways, except the fields fasthttp
// keeps apart (Host, Content-Length, Transfer-Encoding, Content-Type,
// User-Agent; on responses such as Server and Set-Cookie), which go out in
// canonical case and first. Each response is
// written as soon as it is ready, also when pipelined requests follow.
//
// Forwarded requests lose the hop-by-hop headers (Connection, Keep-Alive,
// Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
// Upgrade), every header named in Connection (matched case-insensitively;
// Host, Content-Length, Transfer-Encoding and the headers kelpie sets cannot
// be removed this way), Expect (kelpie answers 100-continue itself), any
// header whose name has an underscore, and dotted look-alikes of the
// forwarding headers. The client's Connection: close is honoured on the
// client connection but never forwarded. kelpie appends the peer address to
// X-Forwarded-For, sets X-Forwarded-Proto and X-Forwarded-Host, and adds an
// X-Request-Id (a per-process random prefix and a counter) unless the client
// sent a printable one of at most 128 bytes. Host, the request target and
// every other header (cookies included) go through byte for byte. Responses
// lose hop-by-hop headers and those the backend named in Connection; a
// backend's Connection: close never closes the client connection.
//
// An HTTP/1.1 GET with an Upgrade header and upgrade among its Connection
// options (beside close too: RFC 9110 §7.8) becomes a tunnel when the
// backend answers 101 with the protocol asked for (tunnel.go); any other
// request loses its Upgrade header.
//
// # Client IP
//
// The client IP is the TCP peer unless the peer is inside
// Options.TrustedProxies; then X-Forwarded-For (all lines, in order) is
// walked from the right, skipping trusted addresses, and the first untrusted
// one is the client. ip_hash upstreams hash that address (balancer.HashIP).
//
// # Keys and sticky sessions
//
// Upstreams with the hash algorithm hash what Upstream.HashOn names (a
// header, cookie, query parameter, the path, or the client IP), read from
// the raw request without allocating (hashkey.go); a request without it is
// picked with balancer.NoKey, which the pool's fallback balances. An
// Upstream with Sticky first looks up its signed cookie (sticky.go): while
// the backend it names is eligible, or drained within DrainGrace, the first
// attempt goes there; otherwise the request is balanced as usual, and any
// response from a backend other than the cookie's carries a new cookie.
//
// # Forwarding, timeouts and errors
//
// Each backend has one transport (transport.go): a fasthttp.HostClient with
// fasthttp's own retries off, a LIFO keep-alive pool capped at
// Upstream.MaxConnsPerBackend, idle connections closed after
// Upstream.IdleConnTimeout. The Proxy keeps it per *balancer.Backend, so it
// survives snapshot rebuilds and reloads with the same connection settings;
// new settings swap it and close the old one's idle connections. Every
// attempt is admitted by Backend.Acquire and the backend's guard and ended
// exactly once (attempt.go), which reports its balancer.Result to the guard
// and the backend's counters. Upstream.ConnectTimeout bounds the connect;
// Upstream.ResponseTimeout bounds the wait for the first response byte after
// the request is written, and then each gap in the response.
//
// # Blame
//
// Only what a backend did counts against it (passive ejection, breaker,
// failure counters): a refused or timed-out connect, a timeout, a reset, a
// malformed response, a 502/503/504 it sent. What the client did never
// does: a request body the client ended early (close, half-close, reset,
// stall) or that grew past MaxBodyBytes, and a request fasthttp refuses to
// write (nothing reached the connection) are local, answered 400, 408 or
// 413 with Connection: close, and not retried. A body the client cut off is
// never passed on as complete: the upstream request is aborted and its
// connection closed without a last chunk (RFC 9112 section 8).
//
// Errors have short text/plain bodies ("kelpie: ...\n") and Cache-Control:
// no-store:
//
//	503 + Retry-After  no eligible backend (counted in Upstream.Stats.Unavailable),
//	                   or every backend at its connection cap
//	502                connect failure, connection reset or closed, unparsable response
//	504                no response within ResponseTimeout
//
// A backend's own 502/503/504 is passed through when it is not retried.
//
// # Retries
//
// Upstream.Retries extra attempts are made, each on a backend not yet tried
// by this request. A connect failure is retried for every method (nothing
// was sent). A reset, a timeout or a 502/503/504 is retried only for
// idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) and only if no
// byte of the request body was sent. A small response body (known length,
// up to 16 KiB) is read whole before any of the response goes to the
// client, so one that breaks off or stalls is retried the same way. A
// response that has started streaming to the client is never retried: a
// backend failing mid-body closes the client connection, so the truncation
// is visible. A reused keep-alive connection that the backend had already
// closed (no response byte) is retried on a fresh connection to the same
// backend (up to 3 times), for idempotent requests, without using the retry
// budget and without counting against the backend. Upstream.Stats.Retries and
// the access log's retries count the same thing: every attempt after the
// first, stale-connection retries included.
//
// # Streaming
//
// Request and response bodies stream in both directions with bounded
// buffers (fasthttp StreamRequestBody / StreamResponseBody), except response
// bodies of known length up to 16 KiB, read whole first: a 256 MiB upload
// and a 256 MiB download keep the proxy's peak RSS around 30 MiB. Body reads
// and writes have rolling timeouts (Options.ReadTimeout / WriteTimeout for
// the client, Upstream.ResponseTimeout / WriteTimeout for the backend), so
// long transfers are bounded per gap, not in total.
//
// # Lifecycle
//
// SetRoutes swaps the route table atomically; requests already routed finish
// on their old upstream. Shutdown stops accepting, closes idle keep-alive
// connections, marks in-flight responses Connection: close and waits for
// them up to its context. Options.ReadTimeout bounds reading a request head
// (slowloris), Options.IdleTimeout idle client connections.
package proxy
