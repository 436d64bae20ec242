package proxy

import (
	"context"
	"net"
)

// Listen opens a TCP listener for Serve or ServeTLS. Unlike net.Listen, the
// connections it accepts have no TCP keep-alive: kelpie ends idle client
// connections with its own timeouts (IdleTimeout, ReadTimeout, TunnelIdle),
// as HAProxy (no "option clitcpka") and nginx (no so_keepalive) do, and Go's
// default keep-alive costs four setsockopt calls per accepted connection,
// about 8 % of kelpie's CPU per request when every request brings a new
// connection (bench/README.md, "Connection churn").
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}
