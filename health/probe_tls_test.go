package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// HTTP probes of an HTTPS upstream use its TLS settings: they pass when the
// backend's certificate verifies and fail when it does not.
func TestBuiltinProbeHTTPS(t *testing.T) {
	ca := testkit.NewCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if !ctx.IsTLS() || string(ctx.Path()) != "/health" {
			ctx.SetStatusCode(500)
		}
	}}
	go srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.KeyPair(t, "127.0.0.1")}})) //nolint:errcheck // ends at Shutdown
	t.Cleanup(func() { srv.Shutdown() })

	probe := func(cfg *tls.Config) error {
		a := (Options{Active: &ActiveOptions{Path: "/health", TLS: cfg}}).withDefaults().Active
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return newProber(a).probe(ctx, ln.Addr().String())
	}
	if err := probe(&tls.Config{RootCAs: ca.Pool()}); err != nil {
		t.Fatalf("probe with the backend's CA: %v", err)
	}
	if err := probe(&tls.Config{RootCAs: x509.NewCertPool()}); err == nil {
		t.Fatal("probe passed against a certificate that does not verify")
	}
	if err := probe(nil); err == nil {
		t.Fatal("plain HTTP probe of a TLS backend passed")
	}
}
