package proxy

import (
	"crypto/tls"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACME certificates come from golang.org/x/crypto/acme/autocert rather than
// caddyserver/certmagic: autocert is maintained with Go itself, adds no
// dependency beyond x/crypto, plugs into tls.Config.GetCertificate as the
// file certificates do, answers tls-alpn-01 on the TLS listener itself, and
// renews at a third of the lifetime left, so short-lived certificates work.
// certmagic offers more (ARI, OCSP stapling, clustered storage drivers) at
// the price of zap, acmez and libdns in the binary; kelpie's storage hook,
// autocert.Cache (three methods), is enough for shared storage (Consul KV;
// README).

// ACMEOptions configures automatic certificates.
type ACMEOptions struct {
	// Email is the account's contact address. Optional.
	Email string
	// Domains are the names certificates are obtained for; a handshake for
	// any other name never reaches the CA. Required.
	Domains []string
	// Directory is the ACME directory URL. Default Let's Encrypt's
	// production directory (acme.LetsEncryptURL).
	Directory string
	// Cache stores the account key and certificates. Required: without it
	// every restart would ask the CA again (and hit its rate limits).
	Cache autocert.Cache
	// HTTPClient talks to the directory. nil: http.DefaultClient. Tests
	// set one trusting their CA's TLS certificate.
	HTTPClient *http.Client
}

// ACME obtains certificates for its domains on first use and renews them
// in the background. Safe for concurrent use.
type ACME struct {
	m       *autocert.Manager
	domains []string
	release func(name string) // the cache's Release, if it has one
}

// orderLocker is a Cache that locks a name while this process orders it,
// across processes sharing the cache (cluster.ACMECache). Release lets go
// after an order that failed: autocert does not tell the cache.
type orderLocker interface{ Release(name string) }

// NewACME returns an ACME certificate source. It contacts the CA only when
// a certificate is first needed.
func NewACME(o ACMEOptions) *ACME {
	dir := o.Directory
	if dir == "" {
		dir = acme.LetsEncryptURL
	}
	domains := make([]string, len(o.Domains))
	for i, d := range o.Domains {
		domains[i] = strings.ToLower(d)
	}
	var release func(string)
	if l, ok := o.Cache.(orderLocker); ok {
		release = l.Release
	}
	return &ACME{
		domains: domains,
		release: release,
		m: &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			Cache:      o.Cache,
			HostPolicy: autocert.HostWhitelist(domains...),
			Email:      o.Email,
			Client:     &acme.Client{DirectoryURL: dir, HTTPClient: o.HTTPClient},
		},
	}
}

// handles reports whether a handshake is the ACME source's: a tls-alpn-01
// challenge, or a name it obtains certificates for.
func (a *ACME) handles(hello *tls.ClientHelloInfo) bool {
	if slices.Contains(hello.SupportedProtos, acme.ALPNProto) {
		return true
	}
	return slices.Contains(a.domains, strings.ToLower(strings.TrimSuffix(hello.ServerName, ".")))
}

// GetCertificate is tls.Config.GetCertificate for the ACME domains and
// tls-alpn-01 challenges.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := a.m.GetCertificate(hello)
	if err != nil && a.release != nil && !slices.Contains(hello.SupportedProtos, acme.ALPNProto) {
		// autocert's cache names: the ECDSA and RSA certificates.
		name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
		a.release(name)
		a.release(name + "+rsa")
	}
	return c, err
}

// Warm obtains (or loads from the cache) a certificate for each domain, so
// the first client does not wait for the CA. It returns the first error.
// autocert bounds each request to the CA itself.
func (a *ACME) Warm() error {
	for _, d := range a.domains {
		hello := &tls.ClientHelloInfo{ServerName: d, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
		if _, err := a.GetCertificate(hello); err != nil {
			return err
		}
	}
	return nil
}
