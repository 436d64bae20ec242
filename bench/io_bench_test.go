package bench

import (
	"net"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy"
	"github.com/valyala/fasthttp"
)

// BenchmarkProxyLoopback is one proxied GET over real loopback TCP on both
// hops, in each I/O mode (proxy.Options.IO): what `io: std` costs against
// the raw system calls. The client and backend are fasthttp on the same
// machine, so their system calls are in the time too.
func BenchmarkProxyLoopback(b *testing.B) {
	for _, mode := range []proxy.IOMode{proxy.IORaw, proxy.IOStd} {
		b.Run("io="+string(mode), func(b *testing.B) {
			beLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			be := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello") }}
			go be.Serve(beLn)   //nolint:errcheck
			defer be.Shutdown() //nolint:errcheck

			pool := balancer.NewPool(balancer.Options{Name: "bench", NewGuard: defaultChecker().NewGuard})
			defer pool.Close()
			pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: beLn.Addr().String()}})
			p, err := proxy.New(proxy.Options{IO: mode}, []proxy.Route{{Upstream: &proxy.Upstream{Pool: pool}}})
			if err != nil {
				b.Fatal(err)
			}
			pxLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go p.Serve(pxLn)              //nolint:errcheck
			defer p.Shutdown(b.Context()) //nolint:errcheck
			x := &inmemProxy{client: &fasthttp.HostClient{Addr: pxLn.Addr().String(), MaxIdemponentCallAttempts: 1}}
			req, resp := benchRequest(), fasthttp.AcquireResponse()
			x.roundTrip(b, req, resp) // warm the connection pools
			b.ReportAllocs()
			for b.Loop() {
				x.roundTrip(b, req, resp)
			}
		})
	}
}
