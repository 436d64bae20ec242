package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultURL is where the CLI clients look for the admin API.
const DefaultURL = "http://127.0.0.1:9901"

// maxReplyBytes bounds what the client reads from the admin API.
const maxReplyBytes = 32 << 20

// Client calls a kelpie admin API: the code behind `kelpie backends`,
// `kelpie drain` and `kelpie ready`. The zero value talks to DefaultURL
// without a token. Safe for concurrent use.
type Client struct {
	// BaseURL is the admin endpoint, such as "http://127.0.0.1:9901". A
	// missing scheme means http. Empty means DefaultURL.
	BaseURL string
	// Token is sent as "Authorization: Bearer <token>" when not empty.
	Token string
	// HTTP does the requests. nil means a client with a 10 s timeout.
	HTTP *http.Client
}

// APIError is a reply outside 2xx, with the message of its JSON error body.
type APIError struct {
	Status  int    // HTTP status code
	Message string // the "error" field, or the status text
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Upstreams fetches GET /api/v1/upstreams. raw is the body as received.
func (c *Client) Upstreams(ctx context.Context) (resp UpstreamsResponse, raw []byte, err error) {
	raw, err = c.do(ctx, http.MethodGet, "/api/v1/upstreams", nil)
	if err == nil {
		err = c.decodeReply(raw, &resp)
	}
	return resp, raw, err
}

// Drain drains the backend at address in upstream and returns its state
// after the drain.
func (c *Client) Drain(ctx context.Context, upstream, address string) (Backend, []byte, error) {
	return c.backendCall(ctx, http.MethodPost, upstream, address, "drain", nil)
}

// Ready puts the backend at address in upstream back into rotation.
func (c *Client) Ready(ctx context.Context, upstream, address string) (Backend, []byte, error) {
	return c.backendCall(ctx, http.MethodPost, upstream, address, "ready", nil)
}

// SetWeight overrides the backend's weight; 0 restores the configured one.
func (c *Client) SetWeight(ctx context.Context, upstream, address string, weight int) (Backend, []byte, error) {
	body, _ := json.Marshal(WeightRequest{Weight: &weight})
	return c.backendCall(ctx, http.MethodPut, upstream, address, "weight", body)
}

func (c *Client) backendCall(ctx context.Context, method, upstream, address, verb string, body []byte) (b Backend, raw []byte, err error) {
	path := "/api/v1/upstreams/" + url.PathEscape(upstream) + "/backends/" + url.PathEscape(address) + "/" + verb
	raw, err = c.do(ctx, method, path, body)
	if err == nil {
		err = c.decodeReply(raw, &b)
	}
	return b, raw, err
}

// Base returns the admin endpoint the client calls, normalized.
func (c *Client) Base() string {
	base := strings.TrimSpace(c.BaseURL)
	if base == "" {
		base = DefaultURL
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return strings.TrimRight(base, "/")
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	base := c.Base()
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: want http://host:port", c.BaseURL)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("admin request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin API at %s: %w", base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: reading reply: %w", base, err)
	}
	if resp.StatusCode/100 != 2 {
		apiErr := &APIError{Status: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
		var e ErrorResponse
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			apiErr.Message = e.Error
		}
		return raw, apiErr
	}
	return raw, nil
}

// unwrapURLError drops url.Error's "Get \"http://...\":" prefix, which
// repeats the URL the message already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Client) decodeReply(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s does not answer like a kelpie admin API: %w", c.Base(), err)
	}
	return nil
}
