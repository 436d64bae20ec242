// Package admin is kelpie's admin HTTP endpoint: the JSON API that lists
// upstreams and drains, readies and re-weights backends, the live dashboard,
// /metrics, /healthz and /readyz. It reads and changes balancer pools only
// through their methods; it never touches the data path.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// maxBodyBytes bounds every request body the API reads.
const maxBodyBytes = 4 << 10

// Options configures a Server. The zero value serves an empty, unauthenticated
// API that reports ready.
type Options struct {
	// Token, when not empty, is the bearer token every mutating call (drain,
	// ready, weight) must present in "Authorization: Bearer <token>"; it is
	// compared in constant time and never logged. Empty means no
	// authentication, which is only safe on a loopback listener (cmd/kelpie
	// refuses anything else).
	Token string
	// Upstreams returns the current pools; it is called per request, so a
	// config reload that swaps pools is seen at once. nil means none.
	Upstreams func() []*balancer.Pool
	// Ready reports whether kelpie should receive traffic; /readyz answers
	// 503 while it returns false. nil means always ready.
	Ready func() bool
	// Status returns extra process information for GET /api/v1/status
	// (version, config path, discovery sync ages...), marshalled as JSON.
	// nil serves an empty object.
	Status func() any
	// Metrics serves GET /metrics. nil answers 404.
	Metrics http.Handler
	// Logger receives drains, readies, weight changes and refused calls.
	// nil discards them.
	Logger *slog.Logger
	// StatePath, when not empty, is a file where the drained addresses of
	// every upstream are saved after each drain or ready, so a restart can
	// restore them (see LoadState). Empty keeps drains in memory only.
	StatePath string
	// Counts returns an upstream's cumulative request figures, which a
	// drill compares before and during its run (client-visible errors,
	// retries, requests). nil reads zeros.
	Counts func(*balancer.Pool) UpstreamCounts
	// DetectionBound returns how soon kelpie's health settings should take
	// a failed backend of the pool out of rotation: the bound a drill is
	// judged by unless its request names one. nil or 0 means
	// DefaultDrillDetectWithin.
	DetectionBound func(*balancer.Pool) time.Duration
	// Heartbeat records a heartbeat of b for PUT .../heartbeat; its error
	// (heartbeats not configured for the pool) is answered 409. nil
	// answers 404 to every heartbeat.
	Heartbeat func(p *balancer.Pool, b *balancer.Backend) error
	// Fleet, when set, serves drain and ready with ?scope=fleet: drains
	// recorded for every instance of the cluster. Nil answers 400 to them.
	Fleet FleetDrains
	// HA returns GET /api/v1/ha's body. Nil answers 404.
	HA func() any
}

// Server is the admin HTTP handler. Safe for concurrent use.
type Server struct {
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	stateMu sync.Mutex // serializes SaveState
	drills  drills
	local   localDrains
}

// New returns the admin handler for o.
func New(o Options) *Server {
	s := &Server{opts: o, log: o.Logger, mux: http.NewServeMux()}
	s.drills.ctx, s.drills.cancel = context.WithCancel(context.Background())
	s.drills.running = map[string]*drill{}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	const backend = "/api/v1/upstreams/{name}/backends/{address}"
	s.mux.HandleFunc("GET /api/v1/upstreams", s.listUpstreams)
	s.mux.HandleFunc("POST "+backend+"/drain", s.mutating(s.drain))
	s.mux.HandleFunc("POST "+backend+"/ready", s.mutating(s.ready))
	s.mux.HandleFunc("PUT "+backend+"/weight", s.mutating(s.weight))
	s.mux.HandleFunc("PUT "+backend+"/heartbeat", s.mutating(s.heartbeat))
	s.mux.HandleFunc("POST "+backend+"/drill", s.mutating(s.startDrill))
	s.mux.HandleFunc("GET /api/v1/drills", s.listDrills)
	s.mux.HandleFunc("GET /api/v1/drills/{id}", s.getDrill)
	s.mux.HandleFunc("POST /api/v1/drills/{id}/abort", s.mutating(s.abortDrill))
	s.mux.HandleFunc("GET /api/v1/status", s.status)
	s.mux.HandleFunc("GET /api/v1/ha", s.ha)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("GET /{$}", serveDashboard)
	return s
}

// ServeHTTP routes r. Requests no route matches get a JSON 404 (or 405 with
// an Allow header when only the method is wrong).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The mux would redirect a path with "..", "." or "//" segments to its
	// clean form; an API has no business following such paths.
	if p := r.URL.EscapedPath(); p != cleanPath(p) {
		writeError(w, http.StatusNotFound, "not found: path is not in canonical form")
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		// Let the mux decide between 404, 405 and a redirect to the clean
		// path, then say it in JSON.
		c := &statusCatcher{header: http.Header{}}
		h.ServeHTTP(c, r)
		for _, k := range []string{"Allow", "Location"} {
			if v := c.header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		writeError(w, c.code, http.StatusText(c.code))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// cleanPath is p with "." and ".." segments and repeated slashes resolved,
// keeping a trailing slash, as net/http's ServeMux canonicalizes paths.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// statusCatcher records the status the mux's own 404/405 handler writes and
// drops its text body.
type statusCatcher struct {
	header http.Header
	code   int
}

func (c *statusCatcher) Header() http.Header { return c.header }
func (c *statusCatcher) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}
func (c *statusCatcher) Write(p []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return len(p), nil
}

func (s *Server) pools() []*balancer.Pool {
	if s.opts.Upstreams == nil {
		return nil
	}
	return s.opts.Upstreams()
}

func (s *Server) listUpstreams(w http.ResponseWriter, r *http.Request) {
	resp := describePools(s.pools())
	s.annotate(&resp)
	writeJSON(w, http.StatusOK, resp)
}

// target resolves the {name} and {address} of a backend route, writing a 404
// and returning nil when either is unknown.
func (s *Server) target(w http.ResponseWriter, r *http.Request) (*balancer.Pool, *balancer.Backend) {
	name, addr := r.PathValue("name"), r.PathValue("address")
	for _, p := range s.pools() {
		if p == nil || p.Name() != name {
			continue
		}
		if b := findBackend(p, addr); b != nil {
			return p, b
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("upstream %q has no backend %q", name, addr))
		return nil, nil
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("unknown upstream %q", name))
	return nil, nil
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	s.setDrain(w, r, true)
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	s.setDrain(w, r, false)
}

func (s *Server) setDrain(w http.ResponseWriter, r *http.Request, on bool) {
	if !emptyBody(w, r) {
		return
	}
	info, ok := s.drainScope(w, r)
	if !ok {
		return
	}
	p, b := s.target(w, r)
	if b == nil {
		return
	}
	verb := "ready"
	if on {
		verb = "drain"
	}
	if !on && info.Scope == ScopeLocal && s.opts.Fleet != nil {
		if _, fleet := s.opts.Fleet.Lookup(p.Name(), b.Address()); fleet {
			writeError(w, http.StatusConflict, fmt.Sprintf("%s in %s is drained fleet-wide: ready it with scope=fleet (kelpie ready -fleet)", b.Address(), p.Name()))
			return
		}
	}
	if info.Scope == ScopeFleet {
		ctx, cancel := context.WithTimeout(r.Context(), fleetTimeout)
		defer cancel()
		var err error
		if on {
			err = s.opts.Fleet.Drain(ctx, p.Name(), b.Address(), info)
		} else {
			err = s.opts.Fleet.Ready(ctx, p.Name(), b.Address())
		}
		if err != nil {
			s.log.Error("admin fleet "+verb+" failed", "upstream", p.Name(), "backend", b.Address(), "err", err)
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	set := p.Undrain
	if on {
		set = p.Drain
	}
	// Drain publishes the new snapshot before returning, so once this reply
	// is sent no new request is picked for b.
	if _, err := set(b.Address()); err != nil {
		s.writePoolError(w, err)
		return
	}
	if on && info.Scope == ScopeLocal {
		s.local.set(p.Name(), b.Address(), &info)
	} else if !on {
		s.local.set(p.Name(), b.Address(), nil)
	}
	s.log.Info("admin "+verb, "upstream", p.Name(), "backend", b.Address(), "scope", info.Scope, "by", info.By, "reason", info.Reason,
		"in_flight", b.InFlight(), "remote", r.RemoteAddr)
	s.saveState()
	out := describeOne(p, b)
	s.annotateOne(p.Name(), &out)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) weight(w http.ResponseWriter, r *http.Request) {
	var req WeightRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Weight == nil {
		writeError(w, http.StatusBadRequest, `body must be {"weight":N}`)
		return
	}
	if n := *req.Weight; n < 0 || n > balancer.MaxWeight {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("weight %d: must be between 0 and %d (0 restores the configured weight)", n, balancer.MaxWeight))
		return
	}
	p, b := s.target(w, r)
	if b == nil {
		return
	}
	if _, err := p.SetWeight(b.Address(), *req.Weight); err != nil {
		s.writePoolError(w, err)
		return
	}
	s.log.Info("admin weight", "upstream", p.Name(), "backend", b.Address(), "weight", b.Weight(), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, describeOne(p, b))
}

// writePoolError maps a pool error: the backend left between lookup and
// change (404), or a refused value (400).
func (s *Server) writePoolError(w http.ResponseWriter, err error) {
	if errors.Is(err, balancer.ErrUnknownBackend) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeError(w, http.StatusBadRequest, err.Error())
}

func (s *Server) saveState() {
	if s.opts.StatePath == "" {
		return
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	var fleet func(upstream, address string) bool
	if s.opts.Fleet != nil {
		fleet = func(upstream, address string) bool { _, ok := s.opts.Fleet.Lookup(upstream, address); return ok }
	}
	if err := saveState(s.opts.StatePath, s.pools(), fleet); err != nil {
		s.log.Error("admin state not saved", "path", s.opts.StatePath, "err", err)
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	var v any = struct{}{}
	if s.opts.Status != nil {
		if st := s.opts.Status(); st != nil {
			v = st
		}
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.opts.Ready != nil && !s.opts.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.opts.Metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	s.opts.Metrics.ServeHTTP(w, r)
}

// decodeBody reads a bounded JSON object into v, rejecting unknown fields
// and trailing data. It writes a 400 (413 when too large) and returns false
// on failure.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxBodyBytes))
			return false
		}
		writeError(w, http.StatusBadRequest, "bad body: "+err.Error())
		return false
	}
	return true
}

// emptyBody accepts no body, an empty one or an empty JSON object, for
// routes that take no parameters.
func emptyBody(w http.ResponseWriter, r *http.Request) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxBodyBytes))
		return false
	}
	if len(data) == 0 {
		return true
	}
	var v struct{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil || dec.More() {
		writeError(w, http.StatusBadRequest, "bad body: this call takes no parameters")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Error: msg})
}
