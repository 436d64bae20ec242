package config

import (
	"strings"

	"github.com/kelpie-lb/kelpie/proxy"
)

// TLS is the TLS listener. Omitted (nil): kelpie serves plain HTTP only.
type TLS struct {
	// Listen is the TLS listener's address, e.g. ":8443". Required.
	Listen string `yaml:"listen"`
	// Certificates are PEM certificate chains with their keys. The one
	// whose names match the client's SNI is served; the first is the
	// default. Reloaded on SIGHUP and when the files change.
	Certificates []CertPair `yaml:"certificates"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// ClientCA, if set, is a PEM bundle: clients must present a
	// certificate signed by one of its CAs (mutual TLS).
	ClientCA string `yaml:"client_ca"`
	// RedirectHTTP makes the plain listener answer every request with 308
	// to the same URL on https. Default false.
	RedirectHTTP bool `yaml:"redirect_http"`
	// ACME obtains and renews certificates automatically; nil: none.
	ACME *ACME `yaml:"acme"`
}

// ACME is automatic certificates from an ACME CA (Let's Encrypt by
// default), validated with tls-alpn-01 on the TLS listener, which must
// therefore be reachable on port 443 under each domain.
type ACME struct {
	// Email is the ACME account's contact. Optional.
	Email string `yaml:"email"`
	// Domains to obtain certificates for. Required.
	Domains []string `yaml:"domains"`
	// Directory is the CA's directory URL. Default Let's Encrypt's.
	Directory string `yaml:"directory"`
	// Cache keeps the account key and certificates: a directory, or
	// "consul://PREFIX" for Consul KV under PREFIX (the consul: block's
	// agent), which a pair of kelpies shares so that one orders and both
	// serve the certificate. Required.
	Cache string `yaml:"cache"`
	// CA is a PEM bundle trusted for the directory's own HTTPS (a private
	// or test CA). Default: the system roots.
	CA string `yaml:"ca"`
}

// CertPair is one certificate chain and its private key, PEM files.
type CertPair struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// UpstreamTLS makes an upstream's backends HTTPS. Omitted (nil): plain
// HTTP. Active probes use the same settings.
type UpstreamTLS struct {
	// CA is a PEM bundle the backends' certificates must chain to.
	// Default: the system's roots.
	CA string `yaml:"ca"`
	// ServerName is the name checked in the backends' certificates and
	// sent as SNI. Default: each backend's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any backend certificate. Default false;
	// only for testing.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// Cert and Key, both or neither, are a client certificate presented
	// to the backends.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

func (v *validator) tls(t *TLS, listen string) {
	if t == nil {
		return
	}
	v.hostPort(at("tls", "listen"), "tls.listen", t.Listen)
	if t.Listen == listen {
		v.errf(at("tls", "listen"), "tls.listen %q is also the plain listen address", t.Listen)
	}
	if len(t.Certificates) == 0 && t.ACME == nil {
		v.errf(at("tls"), "tls: give certificates, acme, or both")
	}
	if a := t.ACME; a != nil {
		if len(a.Domains) == 0 {
			v.errf(at("tls", "acme"), "tls.acme.domains: at least one domain is required")
		}
		for i, d := range a.Domains {
			if d == "" || strings.ContainsAny(d, "/: *") {
				v.errf(at("tls", "acme", "domains", i), "tls.acme.domains: %q is not a host name", d)
			}
		}
		if a.Cache == "" {
			v.errf(at("tls", "acme"), "tls.acme.cache: a directory or consul://PREFIX is required (certificates would be requested again on every start)")
		} else if prefix, ok := ACMEConsulPrefix(a.Cache); ok && prefix == "" {
			v.errf(at("tls", "acme", "cache"), "tls.acme.cache: %q names no Consul KV prefix (e.g. consul://kelpie/acme)", a.Cache)
		}
		if a.CA != "" {
			if _, err := proxy.LoadCAPool(a.CA); err != nil {
				v.errf(at("tls", "acme", "ca"), "tls.acme.ca: %v", err)
			}
		}
		if t.ClientCA != "" {
			v.errf(at("tls", "client_ca"), "tls.client_ca cannot be combined with tls.acme: the CA's tls-alpn-01 check has no client certificate")
		}
	}
	for i, c := range t.Certificates {
		if c.Cert == "" || c.Key == "" {
			v.errf(at("tls", "certificates", i), "tls.certificates[%d]: cert and key are both required", i)
			continue
		}
		if _, err := proxy.LoadKeyPair(proxy.CertFile{Cert: c.Cert, Key: c.Key}); err != nil {
			v.errf(at("tls", "certificates", i), "tls.certificates[%d]: %v", i, err)
		}
	}
	if _, err := proxy.TLSVersion(t.MinVersion); err != nil {
		v.errf(at("tls", "min_version"), "tls.%v", err)
	}
	if t.ClientCA != "" {
		if _, err := proxy.LoadCAPool(t.ClientCA); err != nil {
			v.errf(at("tls", "client_ca"), "tls.client_ca: %v", err)
		}
	}
}

func (v *validator) upstreamTLS(i int, u *Upstream) {
	t := u.TLS
	if t == nil {
		return
	}
	if (t.Cert == "") != (t.Key == "") {
		v.errf(at("upstreams", i, "tls"), "upstream %q: tls.cert and tls.key go together", u.Name)
		return
	}
	if t.CA != "" {
		if _, err := proxy.LoadCAPool(t.CA); err != nil {
			v.errf(at("upstreams", i, "tls", "ca"), "upstream %q: tls.%v", u.Name, err)
		}
	}
	if t.Cert != "" {
		if _, err := proxy.LoadKeyPair(proxy.CertFile{Cert: t.Cert, Key: t.Key}); err != nil {
			v.errf(at("upstreams", i, "tls", "cert"), "upstream %q: tls: %v", u.Name, err)
		}
	}
}

// ACMEConsulPrefix returns the Consul KV prefix of a tls.acme.cache of the
// form consul://PREFIX (slashes at either end trimmed), and whether it has
// that form.
func ACMEConsulPrefix(cache string) (string, bool) {
	rest, ok := strings.CutPrefix(cache, "consul://")
	return strings.Trim(rest, "/"), ok
}
