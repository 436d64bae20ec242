package admin

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// Drill defaults, for the API's optional fields and the CLI's flags.
const (
	// DefaultDrillFor is how long a drill's fault lasts.
	DefaultDrillFor = 30 * time.Second
	// MaxDrillFor bounds a drill's fault.
	MaxDrillFor = 10 * time.Minute
	// DefaultDrillMinEligible is how many other backends must stay in
	// rotation for a drill to start.
	DefaultDrillMinEligible = 1
	// DefaultDrillRecoverWithin is how long after its fault ends a backend
	// has to be back in full rotation (slow start included).
	DefaultDrillRecoverWithin = 2 * time.Minute
	// DefaultDrillDetectWithin is the detection bound when neither the
	// request nor Options.DetectionBound gives one.
	DefaultDrillDetectWithin = 30 * time.Second
	// drillPoll is how often a running drill reads the pool's state.
	drillPoll = 10 * time.Millisecond
	// maxDrillReports is how many finished drills GET /api/v1/drills keeps.
	maxDrillReports = 100
)

// Drill outcomes.
const (
	DrillRunning   = "running"
	DrillSucceeded = "succeeded"
	DrillFailed    = "failed"
	DrillAborted   = "aborted"
)

// Detection mechanisms, as drills and kelpie_backend_detection_seconds name them.
const (
	DetectedActive  = balancer.MechanismActive
	DetectedPassive = balancer.MechanismPassive
	DetectedBreaker = balancer.MechanismBreaker
)

// healthReasons are the reasons kelpie's own detection sets.
const healthReasons = balancer.HealthReasons

// DrillRequest is the body of POST .../{address}/drill. Only Fault is
// required.
type DrillRequest struct {
	// Fault is refuse, blackhole, status=CODE or delay=DURATION.
	Fault string `json:"fault"`
	// For is how long the fault lasts, e.g. "30s". Default 30s, at most 10m.
	For string `json:"for,omitempty"`
	// MinEligible: the drill refuses to start when fewer than this many
	// other backends are in rotation. Default 1.
	MinEligible *int `json:"min_eligible,omitempty"`
	// MaxClientErrors: the drill aborts, ending the fault, once more
	// client-visible errors than this happened in the upstream. Default 0.
	MaxClientErrors *int `json:"max_client_errors,omitempty"`
	// DetectWithin is the detection bound the drill is judged by. Default:
	// the one kelpie derives from the upstream's health settings.
	DetectWithin string `json:"detect_within,omitempty"`
	// RecoverWithin is how long recovery may take after the fault ends.
	// Default 2m.
	RecoverWithin string `json:"recover_within,omitempty"`
}

// DrillStarted is the 202 reply to a drill request.
type DrillStarted struct {
	ID string `json:"id"`
}

// DrillReport is one drill as GET /api/v1/drills[/{id}] shows it. Times are
// measured by kelpie: detection from the fault's start to the backend
// leaving rotation, recovery from the fault's end to the backend back at full
// weight (after rise and slow start).
type DrillReport struct {
	ID       string     `json:"id"`
	Upstream string     `json:"upstream"`
	Backend  string     `json:"backend"`
	Fault    string     `json:"fault"`
	For      string     `json:"for"`
	Started  time.Time  `json:"started"`
	Ended    *time.Time `json:"ended"`
	// Outcome is running, succeeded, failed or aborted.
	Outcome string `json:"outcome"`
	// DetectedAfterMs is null until the backend left rotation.
	DetectedAfterMs *int64 `json:"detected_after_ms"`
	// DetectedBy is active, passive or breaker: the mechanism that took it
	// out.
	DetectedBy string `json:"detected_by,omitempty"`
	// DetectBoundMs is the detection bound the drill is judged by.
	DetectBoundMs int64 `json:"detect_bound_ms"`
	// RecoveredAfterMs is null until the backend is back in full rotation.
	RecoveredAfterMs *int64 `json:"recovered_after_ms"`
	// ClientErrors, Retries and Requests are the upstream's client-visible
	// gateway errors, retries and requests during the drill.
	ClientErrors uint64 `json:"client_errors"`
	Retries      uint64 `json:"retries"`
	Requests     uint64 `json:"requests"`
	// Notes is the timeline, "+MILLISms what happened", and why the drill
	// failed or was aborted.
	Notes []string `json:"notes"`
}

// DrillsResponse is the body of GET /api/v1/drills, newest first.
type DrillsResponse struct {
	Drills []DrillReport `json:"drills"`
}

// UpstreamCounts are an upstream's cumulative request figures, as a drill
// reads them before and during its run.
type UpstreamCounts struct {
	Requests uint64 // finished client requests
	Failed   uint64 // client requests answered with a gateway error
	Retries  uint64 // extra attempts
}

// drills holds the running and the recent drills. Each drill has one
// goroutine, the only writer of its report and of its backend's fault.
type drills struct {
	ctx    context.Context // ends every drill (Server.Close)
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	seq     int
	all     []*drill          // oldest first, at most maxDrillReports finished ones
	running map[string]*drill // by upstream name
}

type drill struct {
	abort chan string // an operator's abort, with the reason
	mu    sync.Mutex
	r     DrillReport
}

func (d *drill) report() DrillReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.r
	r.Notes = append([]string(nil), r.Notes...)
	return r
}

func (d *drill) note(now time.Time, format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.r.Notes = append(d.r.Notes, fmt.Sprintf("+%dms ", now.Sub(d.r.Started).Milliseconds())+fmt.Sprintf(format, args...))
}

func (s *Server) startDrill(w http.ResponseWriter, r *http.Request) {
	if s.opts.Token == "" {
		writeError(w, http.StatusForbidden, "drills inject faults: they need an admin token (set admin.token_env's variable)")
		return
	}
	var req DrillRequest
	if !decodeBody(w, r, &req) {
		return
	}
	plan, msg := s.planDrill(req)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	p, b := s.target(w, r)
	if b == nil {
		return
	}
	if plan.detect == 0 {
		plan.detect = DefaultDrillDetectWithin
		if s.opts.DetectionBound != nil {
			if d := s.opts.DetectionBound(p); d > 0 {
				plan.detect = d
			}
		}
	}
	d, code, msg := s.drills.launch(s, p, b, plan)
	if d == nil {
		writeError(w, code, msg)
		return
	}
	s.log.Warn("drill started", "id", d.r.ID, "upstream", p.Name(), "backend", b.Address(), "fault", plan.fault.String(),
		"for", plan.dur, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, DrillStarted{ID: d.r.ID})
}

// drillPlan is a validated drill request.
type drillPlan struct {
	fault                 balancer.Fault
	dur, detect, recover  time.Duration
	minEligible, maxCErrs int
}

// planDrill validates req; msg says what is wrong.
func (s *Server) planDrill(req DrillRequest) (pl drillPlan, msg string) {
	if req.Fault == "" {
		return pl, `body must name a fault: {"fault":"refuse|blackhole|status=503|delay=500ms","for":"30s"}`
	}
	f, err := balancer.ParseFault(req.Fault)
	if err != nil {
		return pl, err.Error()
	}
	pl = drillPlan{fault: f, dur: DefaultDrillFor, recover: DefaultDrillRecoverWithin,
		minEligible: DefaultDrillMinEligible}
	for _, d := range []struct {
		name string
		s    string
		v    *time.Duration
		max  time.Duration
	}{{"for", req.For, &pl.dur, MaxDrillFor}, {"detect_within", req.DetectWithin, &pl.detect, MaxDrillFor},
		{"recover_within", req.RecoverWithin, &pl.recover, time.Hour}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v <= 0 || v > d.max {
			return pl, fmt.Sprintf("%s %q: must be a duration above 0 and at most %s", d.name, d.s, d.max)
		}
		*d.v = v
	}
	if req.MinEligible != nil {
		if *req.MinEligible < 0 {
			return pl, "min_eligible must not be negative"
		}
		pl.minEligible = *req.MinEligible
	}
	if req.MaxClientErrors != nil {
		if *req.MaxClientErrors < 0 {
			return pl, "max_client_errors must not be negative"
		}
		pl.maxCErrs = *req.MaxClientErrors
	}
	return pl, ""
}

// launch checks the start guards and starts the drill's goroutine. On
// refusal it returns nil, the status and why.
func (ds *drills) launch(s *Server, p *balancer.Pool, b *balancer.Backend, pl drillPlan) (*drill, int, string) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.ctx.Err() != nil {
		return nil, http.StatusServiceUnavailable, "kelpie is shutting down"
	}
	if o := ds.running[p.Name()]; o != nil {
		return nil, http.StatusConflict, fmt.Sprintf("drill %s is already running on upstream %q: one drill per upstream at a time", o.r.ID, p.Name())
	}
	if down := b.Down(); down != 0 {
		return nil, http.StatusConflict, fmt.Sprintf("backend %s is out of rotation (%s): nothing to drill", b.Address(), down)
	}
	others := 0
	for _, m := range p.Snapshot().Members {
		if m != b && m.Down() == 0 {
			others++
		}
	}
	if others < pl.minEligible {
		return nil, http.StatusConflict, fmt.Sprintf("refused: the drill would leave %d eligible backends in upstream %q, fewer than min_eligible %d",
			others, p.Name(), pl.minEligible)
	}
	ds.seq++
	d := &drill{abort: make(chan string, 1), r: DrillReport{
		ID:       fmt.Sprintf("d%d-%d", time.Now().Unix(), ds.seq),
		Upstream: p.Name(), Backend: b.Address(), Fault: pl.fault.String(), For: pl.dur.String(),
		Outcome: DrillRunning, DetectBoundMs: pl.detect.Milliseconds(), Notes: []string{},
	}}
	ds.running[p.Name()] = d
	ds.all = append(ds.all, d)
	ds.trim()
	ds.wg.Add(1)
	go func() {
		defer ds.wg.Done()
		s.runDrill(ds.ctx, d, p, b, pl)
		ds.mu.Lock()
		delete(ds.running, p.Name())
		ds.mu.Unlock()
	}()
	return d, 0, ""
}

// trim drops the oldest finished drills beyond maxDrillReports. Called with
// mu held.
func (ds *drills) trim() {
	for len(ds.all) > maxDrillReports {
		i := 0
		for i < len(ds.all) && ds.running[ds.all[i].r.Upstream] == ds.all[i] {
			i++
		}
		if i == len(ds.all) {
			return
		}
		ds.all = append(ds.all[:i], ds.all[i+1:]...)
	}
}

func (ds *drills) find(id string) *drill {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	for _, d := range ds.all {
		if d.r.ID == id {
			return d
		}
	}
	return nil
}

func (s *Server) listDrills(w http.ResponseWriter, r *http.Request) {
	s.drills.mu.Lock()
	all := append([]*drill(nil), s.drills.all...)
	s.drills.mu.Unlock()
	out := DrillsResponse{Drills: make([]DrillReport, 0, len(all))}
	for i := len(all) - 1; i >= 0; i-- {
		out.Drills = append(out.Drills, all[i].report())
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getDrill(w http.ResponseWriter, r *http.Request) {
	d := s.drills.find(r.PathValue("id"))
	if d == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown drill %q", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, d.report())
}

func (s *Server) abortDrill(w http.ResponseWriter, r *http.Request) {
	if !emptyBody(w, r) {
		return
	}
	d := s.drills.find(r.PathValue("id"))
	if d == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown drill %q", r.PathValue("id")))
		return
	}
	if rep := d.report(); rep.Outcome != DrillRunning {
		writeError(w, http.StatusConflict, fmt.Sprintf("drill %s has already ended: %s", rep.ID, rep.Outcome))
		return
	}
	select {
	case d.abort <- "aborted by an operator (" + r.RemoteAddr + ")":
	default:
	}
	writeJSON(w, http.StatusAccepted, DrillStarted{ID: d.r.ID})
}

// Close ends every running drill, removing its fault, and waits for them.
// Call it at shutdown.
func (s *Server) Close() {
	s.drills.cancel()
	s.drills.wg.Wait()
}

// detectedBy names the mechanism behind a backend's health reasons.
func detectedBy(down balancer.Reason) string { return balancer.Mechanism(down) }

func msPtr(d time.Duration) *int64 {
	ms := d.Milliseconds()
	return &ms
}

// itoa is strconv.Itoa, for notes.
func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
