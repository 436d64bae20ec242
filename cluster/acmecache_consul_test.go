package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/kelpie-lb/kelpie/discovery/consultest"
)

func newACMECache(t *testing.T, addr, prefix string, hold time.Duration) *ACMECache {
	t.Helper()
	c, err := NewACMECache(ACMECacheOptions{Client: clientAt(t, addr), Prefix: prefix, Hold: hold})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// acmePair is two kelpies' caches on one prefix of one agent, with the
// holds given; a has just missed site.test and holds its lock.
func acmePair(t *testing.T, prefix string, holdA, holdB time.Duration) (a, b *ACMECache) {
	t.Helper()
	agent := consultest.Start(t)
	a = newACMECache(t, agent.HTTPAddr, prefix, holdA)
	b = newACMECache(t, agent.HTTPAddr, prefix, holdB)
	if _, err := a.Get(context.Background(), "site.test"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("a: %v, want a miss (a orders)", err)
	}
	return a, b
}

// TestACMECacheKV: blobs go to <prefix>/<name> in Consul KV, a missing one
// is autocert.ErrCacheMiss, Delete removes it.
func TestACMECacheKV(t *testing.T) {
	agent := consultest.Start(t)
	ctx := context.Background()
	c := newACMECache(t, agent.HTTPAddr, "/kelpie/acme-kv/", time.Second)
	if _, err := c.Get(ctx, "site.test"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("get of a missing blob: %v, want ErrCacheMiss", err)
	}
	if err := c.Put(ctx, "site.test", []byte("pem")); err != nil {
		t.Fatal(err)
	}
	p, _, err := agent.Client.KV().Get("kelpie/acme-kv/site.test", nil)
	if err != nil || p == nil || string(p.Value) != "pem" {
		t.Fatalf("KV holds %v, %v", p, err)
	}
	if got, err := c.Get(ctx, "site.test"); err != nil || string(got) != "pem" {
		t.Fatalf("get: %q, %v", got, err)
	}
	if err := c.Delete(ctx, "site.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "site.test"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("get after delete: %v, want ErrCacheMiss", err)
	}
	if _, err := NewACMECache(ACMECacheOptions{Client: agent.Client, Prefix: "/"}); err == nil {
		t.Error("an empty prefix was accepted")
	}
}

// TestACMECacheOneOrder: two kelpies miss the same certificate at once;
// the first keeps the name's lock while it orders, the second waits and
// gets what the first put instead of ordering its own. A challenge token's
// miss never waits (the CA's check asks for it mid-order).
func TestACMECacheOneOrder(t *testing.T) {
	ctx := context.Background()
	a, b := acmePair(t, "kelpie/acme-one", 10*time.Second, 10*time.Second)
	start := time.Now()
	if _, err := b.Get(ctx, "site.test+token"); !errors.Is(err, autocert.ErrCacheMiss) || time.Since(start) > 3*time.Second {
		t.Fatalf("b's token get: %v after %v, want an immediate miss", err, time.Since(start))
	}
	got := make(chan string, 1)
	go func() {
		data, err := b.Get(ctx, "site.test")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(data)
	}()
	select {
	case g := <-got:
		t.Fatalf("b did not wait for a's order: %q", g)
	case <-time.After(500 * time.Millisecond):
	}
	if err := a.Put(ctx, "site.test", []byte("a's certificate")); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != "a's certificate" {
			t.Fatalf("b got %q, want a's certificate", g)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("b still waits after a's put")
	}
}

// TestACMECacheHoldEnds: an order that never ends in a Put (the CA refused)
// keeps the lock only for Hold; then the other kelpie orders itself.
// Release lets go at once.
func TestACMECacheHoldEnds(t *testing.T) {
	ctx := context.Background()
	a, b := acmePair(t, "kelpie/acme-hold", 2*time.Second, 10*time.Second)
	start := time.Now()
	if _, err := b.Get(ctx, "site.test"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatal(err)
	}
	if w := time.Since(start); w < time.Second || w > 8*time.Second {
		t.Errorf("b waited %v for a lock held 2s", w)
	}
	// b holds it now; Release lets a in at once.
	b.Release("site.test")
	start = time.Now()
	if _, err := a.Get(ctx, "site.test"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatal(err)
	}
	if w := time.Since(start); w > 3*time.Second {
		t.Errorf("a waited %v after b's Release", w)
	}
	a.Release("site.test")
}
