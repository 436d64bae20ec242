package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
)

// fakeFleet is a FleetDrains that drains the given pool like the real one.
type fakeFleet struct {
	pool *balancer.Pool
	mu   sync.Mutex
	m    map[string]DrainInfo
	fail error
}

func (f *fakeFleet) Drain(ctx context.Context, upstream, address string, info DrainInfo) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.m[upstream+" "+address] = info
	f.pool.Drain(address)
	return nil
}

func (f *fakeFleet) Ready(ctx context.Context, upstream, address string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	delete(f.m, upstream+" "+address)
	f.pool.Undrain(address)
	return nil
}

func (f *fakeFleet) Lookup(upstream, address string) (DrainInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.m[upstream+" "+address]
	return i, ok
}

func decodeBackend(t *testing.T, r reply) Backend {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	var b Backend
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDrainScopes(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	fleet := &fakeFleet{pool: p, m: map[string]DrainInfo{}}
	srv := serve(t, Options{Fleet: fleet}, p)
	base := srv.URL + "/api/v1/upstreams/web/backends/"

	b := decodeBackend(t, call(t, "POST", base+"127.0.0.1:9001/drain?reason=disk+full&by=ops", "", ""))
	if b.Admin == "ready" || b.Drain == nil || b.Drain.Scope != ScopeLocal || b.Drain.Reason != "disk full" || b.Drain.By != "ops" {
		t.Fatalf("local drain: %+v %+v", b, b.Drain)
	}

	b = decodeBackend(t, call(t, "POST", base+"127.0.0.1:9002/drain?scope=fleet&reason=kernel", "", ""))
	if b.Admin == "ready" || b.Drain == nil || b.Drain.Scope != ScopeFleet || b.Drain.Reason != "kernel" {
		t.Fatalf("fleet drain: %+v %+v", b, b.Drain)
	}
	if i, ok := fleet.Lookup("web", "127.0.0.1:9002"); !ok || !strings.HasPrefix(i.By, "admin api from 127.0.0.1:") {
		t.Fatalf("fleet store got %+v %v", i, ok)
	}

	// The list shows both drains with their scope.
	var list UpstreamsResponse
	r := call(t, "GET", srv.URL+"/api/v1/upstreams", "", "")
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, b := range list.Upstreams[0].Backends {
		if b.Drain != nil {
			got[b.Address] = b.Drain.Scope + ":" + b.Drain.Reason
		}
	}
	if got["127.0.0.1:9001"] != "local:disk full" || got["127.0.0.1:9002"] != "fleet:kernel" {
		t.Fatalf("list drains %v", got)
	}

	// A local ready cannot lift a fleet drain.
	if r := call(t, "POST", base+"127.0.0.1:9002/ready", "", ""); r.code != http.StatusConflict {
		t.Fatalf("local ready of a fleet drain: %d %s", r.code, r.body)
	}
	b = decodeBackend(t, call(t, "POST", base+"127.0.0.1:9002/ready?scope=fleet", "", ""))
	if b.Admin != "ready" || b.Drain != nil {
		t.Fatalf("fleet ready: %+v", b)
	}
	b = decodeBackend(t, call(t, "POST", base+"127.0.0.1:9001/ready", "", ""))
	if b.Admin != "ready" || b.Drain != nil {
		t.Fatalf("local ready: %+v", b)
	}

	// Consul failing: 503, nothing changes.
	fleet.fail = errors.New("consul down")
	if r := call(t, "POST", base+"127.0.0.1:9001/drain?scope=fleet", "", ""); r.code != http.StatusServiceUnavailable {
		t.Fatalf("fleet drain with consul down: %d", r.code)
	}
	if p.Lookup("127.0.0.1:9001").Admin() != balancer.AdminReady {
		t.Fatal("a failed fleet drain drained locally")
	}
	if r := call(t, "POST", base+"127.0.0.1:9001/drain?scope=planet", "", ""); r.code != http.StatusBadRequest {
		t.Fatalf("unknown scope: %d", r.code)
	}
}

func TestFleetScopeWithoutCluster(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001")
	srv := serve(t, Options{}, p)
	r := call(t, "POST", srv.URL+"/api/v1/upstreams/web/backends/127.0.0.1:9001/drain?scope=fleet", "", "")
	if r.code != http.StatusBadRequest || !strings.Contains(r.errorMessage(t), "cluster") {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if p.Lookup("127.0.0.1:9001").Admin() != balancer.AdminReady {
		t.Fatal("drained anyway")
	}
}

func TestHAEndpoint(t *testing.T) {
	srv := serve(t, Options{})
	if r := call(t, "GET", srv.URL+"/api/v1/ha", "", ""); r.code != http.StatusNotFound {
		t.Fatalf("without ha: %d", r.code)
	}
	srv = serve(t, Options{HA: func() any {
		return map[string]any{"role": "leader", "leader": "a", "fencing_token": 7, "since": "x", "vip": nil}
	}})
	var v map[string]any
	raw, err := (&Client{BaseURL: srv.URL}).HA(context.Background(), &v)
	if err != nil || v["role"] != "leader" || v["fencing_token"] != float64(7) {
		t.Fatalf("%v %v %s", v, err, raw)
	}
}

// TestStateFileLeavesOutFleetDrains: Consul keeps fleet drains; a copy in
// the local state file would drain the backend again after a restart even
// when the fleet drain was lifted meanwhile.
func TestStateFileLeavesOutFleetDrains(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	fleet := &fakeFleet{pool: p, m: map[string]DrainInfo{}}
	path := t.TempDir() + "/state.json"
	srv := serve(t, Options{Fleet: fleet, StatePath: path}, p)
	base := srv.URL + "/api/v1/upstreams/web/backends/"
	decodeBackend(t, call(t, "POST", base+"127.0.0.1:9002/drain?scope=fleet", "", ""))
	decodeBackend(t, call(t, "POST", base+"127.0.0.1:9001/drain", "", ""))
	st, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Drained["web"]; len(got) != 1 || got[0] != "127.0.0.1:9001" {
		t.Fatalf("state file drains %v, want only the local one", got)
	}
}
