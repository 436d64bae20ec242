package admin

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestClientAgainstServer(t *testing.T) {
	p := newPool(t, "web", "127.0.0.1:9001", "[::1]:9002")
	srv := serve(t, Options{Token: testToken}, p)
	ctx := context.Background()

	c := &Client{BaseURL: srv.URL + "/", Token: testToken}
	resp, raw, err := c.Upstreams(ctx)
	if err != nil || len(resp.Upstreams) != 1 || len(resp.Upstreams[0].Backends) != 2 || len(raw) == 0 {
		t.Fatalf("Upstreams = %+v, %v", resp, err)
	}
	if b, _, err := c.Drain(ctx, "web", "[::1]:9002"); err != nil || b.Admin != "drained" {
		t.Fatalf("Drain IPv6 = %+v, %v", b, err)
	}
	if b, _, err := c.SetWeight(ctx, "web", "127.0.0.1:9001", 7); err != nil || b.Weight != 7 {
		t.Fatalf("SetWeight = %+v, %v", b, err)
	}
	if b, _, err := c.Ready(ctx, "web", "[::1]:9002"); err != nil || b.Admin != "ready" {
		t.Fatalf("Ready = %+v, %v", b, err)
	}

	var apiErr *APIError
	_, _, err = (&Client{BaseURL: srv.URL}).Drain(ctx, "web", "127.0.0.1:9001")
	if !errors.As(err, &apiErr) || apiErr.Status != 401 || !strings.Contains(apiErr.Message, "token") {
		t.Errorf("Drain without token: %v", err)
	}
	_, _, err = c.SetWeight(ctx, "web", "127.0.0.1:9001", -2)
	if !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("SetWeight -2: %v", err)
	}
	_, _, err = c.Drain(ctx, "web/../x", "127.0.0.1:9001")
	if !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Errorf("Drain of an upstream with a slash: %v", err)
	}
}

func TestClientBase(t *testing.T) {
	for in, want := range map[string]string{
		"":                      DefaultURL,
		"127.0.0.1:9901":        "http://127.0.0.1:9901",
		"https://lb.example/x/": "https://lb.example/x",
		" http://[::1]:9901 ":   "http://[::1]:9901",
	} {
		if got := (&Client{BaseURL: in}).Base(); got != want {
			t.Errorf("Base(%q) = %q, want %q", in, got, want)
		}
	}
}
