package proxy

import (
	"context"
	"crypto/tls"
	"slices"
	"sync"
	"testing"

	"golang.org/x/crypto/acme/autocert"
)

// lockingCache is an in-memory autocert.Cache that records Release calls,
// as cluster.ACMECache has them.
type lockingCache struct {
	mu       sync.Mutex
	released []string
}

func (c *lockingCache) Get(context.Context, string) ([]byte, error) {
	return nil, autocert.ErrCacheMiss
}
func (c *lockingCache) Put(context.Context, string, []byte) error { return nil }
func (c *lockingCache) Delete(context.Context, string) error      { return nil }
func (c *lockingCache) Release(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = append(c.released, name)
}

// TestACMEFailedOrderReleasesLock: when an order fails (here the CA cannot
// be reached), the cache's order lock for the name is let go at once, not
// after its hold, so the other kelpie of a pair may try.
func TestACMEFailedOrderReleasesLock(t *testing.T) {
	cache := &lockingCache{}
	a := NewACME(ACMEOptions{Domains: []string{"Site.Test"}, Directory: "http://" + deadAddr(t) + "/dir", Cache: cache})
	_, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: "site.test.", CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
	if err == nil {
		t.Fatal("a certificate from an unreachable CA")
	}
	cache.mu.Lock()
	defer cache.mu.Unlock()
	for _, want := range []string{"site.test", "site.test+rsa"} {
		if !slices.Contains(cache.released, want) {
			t.Errorf("released %q, want %q among them", cache.released, want)
		}
	}
}
