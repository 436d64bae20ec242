package proxy

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// faultTransport injects a drill's fault (balancer.Fault) in front of one
// backend's transport, so that the attempt lifecycle sees what a real
// failure would show it: a refused connect, a connect that hangs until its
// timeout, a gateway status, a slow answer. Nothing reaches the backend
// unless the fault is a delay. begin wraps a backend's transport only while
// a fault is set; the steady state pays one atomic load.
type faultTransport struct {
	next    transport
	f       *balancer.Fault
	connect time.Duration // the upstream's connect timeout: how long a black hole holds a connect
}

// injected is the error of a connect a fault refused or timed out.
type injected struct {
	f       *balancer.Fault
	timeout bool
}

func (e *injected) Error() string {
	if e.timeout {
		return fmt.Sprintf("drill fault %s: connect timed out", e.f)
	}
	return fmt.Sprintf("drill fault %s: %s", e.f, syscall.ECONNREFUSED)
}

// Timeout reports a black hole's timeout, as a net.Error would.
func (e *injected) Timeout() bool { return e.timeout }

// Unwrap gives the errors a real failure would carry.
func (e *injected) Unwrap() error {
	if e.timeout {
		return os.ErrDeadlineExceeded
	}
	return syscall.ECONNREFUSED
}

// drillBody is the body of an injected status.
const drillBody = "kelpie drill: injected status\n"

// Do applies the fault, then (for a delay) runs the request.
func (t faultTransport) Do(req *fasthttp.Request, resp *fasthttp.Response) (wire, error) {
	switch t.f.Kind {
	case balancer.FaultRefuse:
		return wire{}, &dialError{&injected{f: t.f}}
	case balancer.FaultBlackhole:
		time.Sleep(t.connect)
		return wire{}, &dialError{&injected{f: t.f, timeout: true}}
	case balancer.FaultStatus:
		resp.Reset()
		resp.SetStatusCode(t.f.Status)
		resp.Header.Set("X-Kelpie-Drill", t.f.String())
		// As a stream, like a backend's body: forward reads it from there.
		resp.SetBodyStream(strings.NewReader(drillBody), len(drillBody))
		return wire{sent: true, gotBytes: true}, nil
	case balancer.FaultDelay:
		time.Sleep(t.f.Delay)
	}
	return t.next.Do(req, resp)
}

// CloseIdleConnections closes the wrapped transport's idle connections.
func (t faultTransport) CloseIdleConnections() { t.next.CloseIdleConnections() }

// withFault wraps t in b's injected fault, if any.
func withFault(t transport, up *Upstream, b *balancer.Backend) transport {
	f := b.Fault()
	if f == nil {
		return t
	}
	return faultTransport{next: t, f: f, connect: up.settings().connect}
}
