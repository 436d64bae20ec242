package proxy

import (
	"context"
	"net"

	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
)

// Listen opens a TCP listener for Serve or ServeTLS, for a proxy whose
// Options.IO is mode. With IORaw (or "") on Linux its connections are
// accepted by kelpie (rawio.Listener): a rawio.Sock each,
// read and written with raw system calls and put on Go's netpoller only if
// it has to wait, with no local-address lookup and TCP_NODELAY only from
// its second write; out of descriptors, it waits and accepts again. That
// is what a new connection per request costs less with (bench/README.md,
// "Connection churn"). With IOStd it is net's listener. Either way the
// kernel hands over a connection once its first bytes are in
// (rawio.DeferAccept). Like HAProxy's (no "option clitcpka") and nginx's
// (no so_keepalive), the connections have no TCP keep-alive: kelpie ends
// idle clients with its own timeouts (IdleTimeout, ReadTimeout,
// TunnelIdle).
func Listen(addr string, mode IOMode) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: rawio.DeferAccept}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	if mode == IOStd {
		return ln, nil
	}
	if rl, err := rawio.NewListener(ln); err == nil {
		return rl, nil
	}
	return ln, nil
}
