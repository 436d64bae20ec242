package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/kelpie-lb/kelpie/cluster"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/proxy"
)

// certWatchInterval is how often the TLS listener's certificate files are
// checked for changes (proxy.CertStore.Watch).
const certWatchInterval = 5 * time.Second

// newCertStore loads the TLS listener's certificates; nil without a tls
// block.
func newCertStore(cfg *config.Config, a *app) (*proxy.CertStore, error) {
	if cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 {
		return nil, nil
	}
	files := make([]proxy.CertFile, len(cfg.TLS.Certificates))
	for i, c := range cfg.TLS.Certificates {
		files[i] = proxy.CertFile{Cert: c.Cert, Key: c.Key}
	}
	s, err := proxy.NewCertStore(files, a.log.With("component", "tls"))
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return s, nil
}

// serverTLS is the TLS listener's config.
func serverTLS(t *config.TLS, certs *proxy.CertStore, acme *proxy.ACME) (*tls.Config, error) {
	o := proxy.ServerTLSOptions{Certs: certs, ACME: acme}
	var err error
	if o.MinVersion, err = proxy.TLSVersion(t.MinVersion); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if t.ClientCA != "" {
		if o.ClientCAs, err = proxy.LoadCAPool(t.ClientCA); err != nil {
			return nil, fmt.Errorf("tls.client_ca: %w", err)
		}
	}
	return proxy.ServerTLSConfig(o), nil
}

// redirectPort is proxy.Options.HTTPSRedirectPort: the TLS listener's port
// when tls.redirect_http is on, else 0.
func redirectPort(cfg *config.Config) int {
	if cfg.TLS == nil || !cfg.TLS.RedirectHTTP {
		return 0
	}
	_, port, _ := net.SplitHostPort(cfg.TLS.Listen) // validated by config
	n, _ := strconv.Atoi(port)
	return n
}

// upstreamTLS is the client config of an upstream's HTTPS backends and
// their probes; nil for plain HTTP ones. The files are read again on every
// reload, so a SIGHUP picks up a rotated CA or client certificate (the
// upstream's connections are then made anew).
func upstreamTLS(u config.Upstream) (*tls.Config, error) {
	t := u.TLS
	if t == nil {
		return nil, nil
	}
	c := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		pool, err := proxy.LoadCAPool(t.CA)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: tls: %w", u.Name, err)
		}
		c.RootCAs = pool
	}
	if t.Cert != "" {
		kp, err := proxy.LoadKeyPair(proxy.CertFile{Cert: t.Cert, Key: t.Key})
		if err != nil {
			return nil, fmt.Errorf("upstream %s: tls: %w", u.Name, err)
		}
		c.Certificates = []tls.Certificate{*kp}
	}
	return c, nil
}

// tlsShape is what of the tls block needs a restart to change: all of it
// but the certificate files' contents.
func tlsShape(t *config.TLS) string {
	if t == nil {
		return "none"
	}
	return fmt.Sprintf("%+v", *t)
}

// newACME is the tls.acme block's certificate source; nil without one.
func newACME(cfg *config.Config, log *slog.Logger) (*proxy.ACME, error) {
	t := cfg.TLS
	if t == nil || t.ACME == nil {
		return nil, nil
	}
	a := t.ACME
	o := proxy.ACMEOptions{Email: a.Email, Domains: a.Domains, Directory: a.Directory, Cache: autocert.DirCache(a.Cache)}
	if prefix, ok := config.ACMEConsulPrefix(a.Cache); ok {
		client, err := consulClient(cfg.Consul)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.cache: %w", err)
		}
		c, err := cluster.NewACMECache(cluster.ACMECacheOptions{Client: client, Prefix: prefix, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("tls.acme.cache: %w", err)
		}
		o.Cache = c
	}
	if a.CA != "" {
		pool, err := proxy.LoadCAPool(a.CA)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.ca: %w", err)
		}
		o.HTTPClient = &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	return proxy.NewACME(o), nil
}
