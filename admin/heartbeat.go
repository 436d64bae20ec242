package admin

import "net/http"

// heartbeat is PUT .../{address}/heartbeat: a backend (or its agent) says it
// is alive. The reply is the backend's state.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	if !emptyBody(w, r) {
		return
	}
	p, b := s.target(w, r)
	if b == nil {
		return
	}
	if s.opts.Heartbeat == nil {
		writeError(w, http.StatusNotFound, "heartbeats are not enabled")
		return
	}
	if err := s.opts.Heartbeat(p, b); err != nil {
		writeError(w, http.StatusConflict, "upstream "+p.Name()+": "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, describeOne(p, b))
}
