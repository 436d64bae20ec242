package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/acme"

	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
)

// CertFile names one certificate chain and its private key, both PEM files.
type CertFile struct {
	Cert, Key string
}

// CertStore serves the TLS listener's certificates. GetCertificate picks one
// by SNI from an immutable set behind an atomic pointer, so Reload swaps in
// new certificates without a lock on the handshake path and without touching
// connections already open. Safe for concurrent use.
type CertStore struct {
	files []CertFile
	log   *slog.Logger
	set   atomic.Pointer[certSet]

	mu      sync.Mutex // serializes Reload
	lastErr string     // the last reload error, logged once
	stamp   string     // what the files looked like at the last load (Watch)
}

// certSet is one loaded generation of certificates.
type certSet struct {
	certs  []*tls.Certificate
	exact  map[string]*tls.Certificate // lower-case DNS name
	wild   map[string]*tls.Certificate // "*.example.com" stored as "example.com"
	deflt  *tls.Certificate            // the first file's
	loaded time.Time
}

// ErrNoCertificates is returned by NewCertStore when given no files.
var ErrNoCertificates = errors.New("tls: no certificates configured")

// NewCertStore loads files (the first is the default for clients that send
// no matching SNI). It fails, naming the file and the reason, if any pair
// does not load. log receives reload results; nil discards them.
func NewCertStore(files []CertFile, log *slog.Logger) (*CertStore, error) {
	if len(files) == 0 {
		return nil, ErrNoCertificates
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &CertStore{files: append([]CertFile(nil), files...), log: log}
	stamp := s.fileStamp()
	set, err := loadCertSet(s.files)
	if err != nil {
		return nil, err
	}
	s.set.Store(set)
	s.stamp = stamp
	return s, nil
}

// LoadKeyPair loads one certificate and key, with an error that names the
// file at fault and why. kelpie check uses it.
func LoadKeyPair(f CertFile) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", f.Cert, err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", f.Key, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", f.Cert, f.Key, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", f.Cert, err)
		}
	}
	if time.Now().After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("certificate %s: expired on %s", f.Cert, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &c, nil
}

func loadCertSet(files []CertFile) (*certSet, error) {
	set := &certSet{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}, loaded: time.Now()}
	for _, f := range files {
		c, err := LoadKeyPair(f)
		if err != nil {
			return nil, err
		}
		set.certs = append(set.certs, c)
		names := c.Leaf.DNSNames
		if len(names) == 0 && c.Leaf.Subject.CommonName != "" {
			names = []string{c.Leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = strings.ToLower(n)
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				if set.wild[rest] == nil {
					set.wild[rest] = c
				}
			} else if set.exact[n] == nil { // the first file naming a host wins
				set.exact[n] = c
			}
		}
	}
	set.deflt = set.certs[0]
	return set, nil
}

// GetCertificate is tls.Config.GetCertificate: the certificate whose names
// match the client's SNI (exact before wildcard), else the default one.
func (s *CertStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := s.set.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if c := set.exact[name]; c != nil {
		return c, nil
	}
	if _, rest, ok := strings.Cut(name, "."); ok {
		if c := set.wild[rest]; c != nil {
			return c, nil
		}
	}
	return set.deflt, nil
}

// Reload reads the files again and, if all load, swaps them in. On an error
// the certificates in use stay, and the error is logged once (until the
// files change to another error or load again).
func (s *CertStore) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked(s.fileStamp())
}

func (s *CertStore) reloadLocked(stamp string) error {
	s.stamp = stamp
	set, err := loadCertSet(s.files)
	if err != nil {
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			s.log.Error("tls certificates not reloaded: keeping the ones in use", "err", err)
		}
		return err
	}
	s.lastErr = ""
	s.set.Store(set)
	s.log.Info("tls certificates loaded", "count", len(set.certs))
	return nil
}

// Watch reloads the certificates whenever their files change, checking
// every interval until ctx ends. It compares each file's resolved path,
// size and modification time, so a Kubernetes secret mount (which swaps a
// "..data" symlink in the directory rather than writing the files) is seen
// as a change too. Polling needs no extra dependency and works on every
// file system, including the network and overlay ones inotify misses.
func (s *CertStore) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.checkFiles()
	}
}

// checkFiles is one step of Watch: reload when the files look different.
func (s *CertStore) checkFiles() {
	stamp := s.fileStamp()
	s.mu.Lock()
	defer s.mu.Unlock()
	if stamp != s.stamp {
		_ = s.reloadLocked(stamp)
	}
}

// fileStamp describes the files as they are now on disk.
func (s *CertStore) fileStamp() string {
	var b strings.Builder
	for _, f := range s.files {
		for _, p := range []string{f.Cert, f.Key} {
			real, err := filepath.EvalSymlinks(p)
			fi, serr := os.Stat(p)
			if err != nil || serr != nil {
				fmt.Fprintf(&b, "%s:missing;", p)
				continue
			}
			fmt.Fprintf(&b, "%s:%s:%d:%d;", p, real, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

// Loaded returns when the certificates in use were loaded.
func (s *CertStore) Loaded() time.Time { return s.set.Load().loaded }

// TLSVersion parses a min_version value: "1.2" or "1.3".
func TLSVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("min_version %q: want 1.2 or 1.3", s)
}

// LoadCAPool reads a PEM bundle of CA certificates.
func LoadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca file %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// ServerTLSOptions configures the TLS listener.
type ServerTLSOptions struct {
	// Certs serves the certificates from files. Required unless ACME is
	// set; with both, ACME serves its domains and Certs the rest.
	Certs *CertStore
	// ACME, if set, serves automatic certificates for its domains and
	// answers tls-alpn-01 challenges.
	ACME *ACME
	// MinVersion is the lowest TLS version accepted. Default TLS 1.2.
	MinVersion uint16
	// ClientCAs, if set, makes a client certificate signed by one of them
	// required (mutual TLS). Default nil: no client certificate asked for.
	ClientCAs *x509.CertPool
}

// ServerTLSConfig builds the listener's tls.Config: certificates through the
// store's GetCertificate (so reloads reach running listeners; fasthttp and
// tls.NewListener clone the config, which keeps the function), Go's cipher
// suite defaults, and ALPN "http/1.1" only: kelpie does not speak HTTP/2.
func ServerTLSConfig(o ServerTLSOptions) *tls.Config {
	c := &tls.Config{
		MinVersion: o.MinVersion,
		NextProtos: []string{"http/1.1"},
	}
	switch {
	case o.ACME == nil:
		c.GetCertificate = o.Certs.GetCertificate
	case o.Certs == nil:
		c.GetCertificate = o.ACME.GetCertificate
		c.NextProtos = append(c.NextProtos, acme.ALPNProto)
	default:
		c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if o.ACME.handles(hello) {
				return o.ACME.GetCertificate(hello)
			}
			return o.Certs.GetCertificate(hello)
		}
		c.NextProtos = append(c.NextProtos, acme.ALPNProto)
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if o.ClientCAs != nil {
		c.ClientCAs = o.ClientCAs
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c
}

// ServeTLS accepts TLS connections on ln with cfg and serves them until
// Shutdown, like Serve. Requests arriving this way are forwarded with
// X-Forwarded-Proto: https.
func (p *Proxy) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	err := p.server.Serve(tlsListener{listener{ln, p.opts.IO == IORaw}, cfg})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("proxy serve tls %s: %w", ln.Addr(), err)
	}
	return nil
}

// tlsListener hands fasthttp's server clientConns over TLS: the clientConn
// sits above TLS, so its head scan and its record of how the client's
// stream ended see the plaintext requests, not the records carrying them.
// The handshake runs on the connection's first read, in the goroutine that
// serves it, not in the accept loop. With raw set (IORaw) TLS reads and
// writes the socket beneath it with raw system calls (a rawio.Sock from
// Listen's listener does; net's TCPConn through rawSocket).
type tlsListener struct {
	listener // its accept: the socket
	cfg      *tls.Config
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.accept()
	if err != nil {
		return nil, err
	}
	sock := c
	if l.raw {
		if r := rawio.New(c); r != nil {
			sock = rawSocket{c, r}
		}
	}
	tc := tls.Server(sock, l.cfg)
	// Not raw above TLS: the clientConn reads the plaintext, not a socket.
	return &tlsClientConn{newClientConn(tc, false), tc}, nil
}

// rawSocket is the TCP socket beneath a TLS connection, read and written
// with rawio's raw system calls (recvfrom and sendto without the runtime's
// syscall bookkeeping) as plain client connections are; deadlines and
// Close are the socket's own, and rawio waits through the same netpoller,
// so they apply as before.
type rawSocket struct {
	net.Conn
	r *rawio.Conn
}

func (s rawSocket) Read(b []byte) (int, error)  { return s.r.Read(b) }
func (s rawSocket) Write(b []byte) (int, error) { return s.r.Write(b) }

// tlsClientConn is a clientConn over TLS that fasthttp still recognises as
// TLS (RequestCtx.IsTLS, TLSConnectionState look for these two methods).
type tlsClientConn struct {
	*clientConn
	tc *tls.Conn
}

func (c *tlsClientConn) Handshake() error                     { return c.tc.Handshake() }
func (c *tlsClientConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// redirectHTTPS answers a request on a plain listener with 308 to the same
// host and target on https (Options.HTTPSRedirectPort).
func (p *Proxy) redirectHTTPS(ctx *fasthttp.RequestCtx) {
	host := string(ctx.Request.Header.Host())
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6 literal
	}
	if port := p.opts.HTTPSRedirectPort; port != 443 {
		host += ":" + strconv.Itoa(port)
	}
	r := &ctx.Response
	r.Reset()
	r.SetStatusCode(fasthttp.StatusPermanentRedirect)
	r.Header.Set("Location", "https://"+host+string(ctx.Request.Header.RequestURI()))
	r.Header.Set("Cache-Control", "no-store")
	r.Header.SetContentType("text/plain; charset=utf-8")
	r.SetBodyString("kelpie: use https\n")
}

// dialTLS wraps dial with a TLS client handshake under cfg, bounded by the
// connect timeout. A failed handshake is a failure to connect: nothing of
// the request was sent. cfg's ServerName, when empty, is the backend's host.
func dialTLS(dial func(string, time.Duration) (net.Conn, error), cfg *tls.Config) func(string, time.Duration) (net.Conn, error) {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		c, err := dial(addr, timeout)
		if err != nil {
			return nil, err
		}
		cc := cfg
		if cc.ServerName == "" {
			cc = cfg.Clone()
			cc.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(c, cc)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		return tc, nil
	}
}
