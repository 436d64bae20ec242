package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Drain scopes: a local drain changes this instance only; a fleet drain
// is recorded in Consul and applied by every instance of the cluster.
const (
	ScopeLocal = "local"
	ScopeFleet = "fleet"
)

// DrainInfo says who drained a backend, why and for whom. It is part of
// Backend when the backend is drained through the API (or restored drained).
type DrainInfo struct {
	// Scope is ScopeLocal or ScopeFleet.
	Scope  string    `json:"scope"`
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at,omitzero"`
}

// FleetDrains records drains for the whole cluster. cmd/kelpie adapts the
// cluster package's Drainer to it.
type FleetDrains interface {
	// Drain records the drain and applies it locally before returning.
	Drain(ctx context.Context, upstream, address string, info DrainInfo) error
	// Ready lifts it everywhere and readies the backend locally.
	Ready(ctx context.Context, upstream, address string) error
	// Lookup returns the fleet drain of a backend, if there is one.
	Lookup(upstream, address string) (DrainInfo, bool)
}

// fleetTimeout bounds one fleet drain or ready call to Consul.
const fleetTimeout = 5 * time.Second

// localDrains remembers who drained what locally and why.
type localDrains struct {
	mu sync.Mutex
	m  map[[2]string]DrainInfo
}

func (l *localDrains) set(upstream, address string, info *DrainInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[[2]string]DrainInfo{}
	}
	if info == nil {
		delete(l.m, [2]string{upstream, address})
	} else {
		l.m[[2]string{upstream, address}] = *info
	}
}

func (l *localDrains) get(upstream, address string) (DrainInfo, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.m[[2]string{upstream, address}]
	return i, ok
}

// drainScope reads ?scope= (local by default) and the drain's ?by= and
// ?reason=. It writes a 400 and returns false when the scope is unknown or
// fleet without a cluster.
func (s *Server) drainScope(w http.ResponseWriter, r *http.Request) (DrainInfo, bool) {
	q := r.URL.Query()
	info := DrainInfo{Scope: q.Get("scope"), By: q.Get("by"), Reason: q.Get("reason"), At: time.Now().UTC()}
	if info.By == "" {
		info.By = "admin api from " + r.RemoteAddr
	}
	switch info.Scope {
	case "", ScopeLocal:
		info.Scope = ScopeLocal
	case ScopeFleet:
		if s.opts.Fleet == nil {
			writeError(w, http.StatusBadRequest, "scope=fleet needs a cluster: block (with consul:) in the config")
			return info, false
		}
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("scope %q: want local or fleet", info.Scope))
		return info, false
	}
	if len(info.Reason) > 500 || len(info.By) > 200 {
		writeError(w, http.StatusBadRequest, "reason is limited to 500 bytes and by to 200")
		return info, false
	}
	return info, true
}

// drainInfo is what the API shows of a drained backend's drain: the fleet
// drain first (it wins: lifting the local one would not ready it), then the
// local one.
func (s *Server) drainInfo(upstream, address string) *DrainInfo {
	if s.opts.Fleet != nil {
		if i, ok := s.opts.Fleet.Lookup(upstream, address); ok {
			return &i
		}
	}
	if i, ok := s.local.get(upstream, address); ok {
		return &i
	}
	return nil
}

// annotate adds drain information to every drained backend of resp.
func (s *Server) annotate(resp *UpstreamsResponse) {
	for i := range resp.Upstreams {
		u := &resp.Upstreams[i]
		for j := range u.Backends {
			s.annotateOne(u.Name, &u.Backends[j])
		}
	}
}

func (s *Server) annotateOne(upstream string, b *Backend) {
	if b.Admin != "ready" {
		b.Drain = s.drainInfo(upstream, b.Address)
		if b.Drain == nil {
			b.Drain = &DrainInfo{Scope: ScopeLocal}
		}
	}
}

// ha serves GET /api/v1/ha.
func (s *Server) ha(w http.ResponseWriter, r *http.Request) {
	if s.opts.HA == nil {
		writeError(w, http.StatusNotFound, "ha is not enabled (no ha: block in the config)")
		return
	}
	writeJSON(w, http.StatusOK, s.opts.HA())
}

// HA fetches GET /api/v1/ha into v (cluster.HAStatus's shape).
func (c *Client) HA(ctx context.Context, v any) ([]byte, error) {
	raw, err := c.do(ctx, http.MethodGet, "/api/v1/ha", nil)
	if err == nil {
		err = c.decodeReply(raw, v)
	}
	return raw, err
}

// DrainOptions are the optional parts of a drain call.
type DrainOptions struct {
	// Scope is ScopeLocal (default) or ScopeFleet.
	Scope  string
	By     string
	Reason string
}

func (o DrainOptions) query() string {
	q := url.Values{}
	if o.Scope != "" {
		q.Set("scope", o.Scope)
	}
	if o.By != "" {
		q.Set("by", o.By)
	}
	if o.Reason != "" {
		q.Set("reason", o.Reason)
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// DrainWith is Drain with a scope and the drain's author and reason.
func (c *Client) DrainWith(ctx context.Context, upstream, address string, o DrainOptions) (Backend, []byte, error) {
	return c.backendCall(ctx, http.MethodPost, upstream, address, "drain"+o.query(), nil)
}

// ReadyWith is Ready with a scope: ScopeFleet lifts a fleet drain.
func (c *Client) ReadyWith(ctx context.Context, upstream, address string, o DrainOptions) (Backend, []byte, error) {
	return c.backendCall(ctx, http.MethodPost, upstream, address, "ready"+DrainOptions{Scope: o.Scope}.query(), nil)
}
