package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// StartDrill asks for a drill on the backend at address in upstream and
// returns its id.
func (c *Client) StartDrill(ctx context.Context, upstream, address string, req DrillRequest) (string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("drill request: %w", err)
	}
	path := "/api/v1/upstreams/" + url.PathEscape(upstream) + "/backends/" + url.PathEscape(address) + "/drill"
	raw, err := c.do(ctx, http.MethodPost, path, body)
	if err != nil {
		return "", err
	}
	var s DrillStarted
	if err := c.decodeReply(raw, &s); err != nil {
		return "", err
	}
	return s.ID, nil
}

// Drill fetches one drill's report. raw is the body as received.
func (c *Client) Drill(ctx context.Context, id string) (r DrillReport, raw []byte, err error) {
	raw, err = c.do(ctx, http.MethodGet, "/api/v1/drills/"+url.PathEscape(id), nil)
	if err == nil {
		err = c.decodeReply(raw, &r)
	}
	return r, raw, err
}

// AbortDrill ends a running drill and its fault.
func (c *Client) AbortDrill(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodPost, "/api/v1/drills/"+url.PathEscape(id)+"/abort", nil)
	return err
}

// WriteDrill prints a drill report as a readable timeline.
func WriteDrill(w io.Writer, r DrillReport) {
	fmt.Fprintf(w, "drill %s: upstream %s, backend %s, fault %s for %s\n", r.ID, r.Upstream, r.Backend, r.Fault, r.For)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
	ms := func(p *int64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%dms", *p)
	}
	by := r.DetectedBy
	if by == "" {
		by = "-"
	}
	fmt.Fprintf(w, "outcome:   %s\n", strings.ToUpper(r.Outcome))
	fmt.Fprintf(w, "detected:  %s by %s (bound %dms)\n", ms(r.DetectedAfterMs), by, r.DetectBoundMs)
	fmt.Fprintf(w, "recovered: %s after the fault ended\n", ms(r.RecoveredAfterMs))
	fmt.Fprintf(w, "traffic:   %d requests, %d retries, %d client-visible errors\n", r.Requests, r.Retries, r.ClientErrors)
}
