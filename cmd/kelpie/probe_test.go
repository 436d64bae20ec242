package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestProbeExitCodes(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String() + "/"
	ln.Close()

	for _, tc := range []struct {
		name string
		args []string
		want int
		out  string // expected in stdout+stderr
	}{
		{"2xx", []string{srv.URL + "/ok"}, 0, "204"},
		{"flag after url", []string{srv.URL + "/ok", "-timeout", "1s"}, 0, "204"},
		{"quiet", []string{"-q", srv.URL + "/ok"}, 0, ""},
		{"503", []string{srv.URL + "/down"}, 1, "status 503"},
		{"redirect not followed", []string{srv.URL + "/moved"}, 1, "status 302"},
		{"refused", []string{refused}, 1, "refused"},
		{"timeout", []string{"-timeout", "200ms", srv.URL + "/hang"}, 1, "no answer within 200ms"},
		{"no url", nil, 2, "usage"},
		{"two urls", []string{srv.URL, srv.URL}, 2, "usage"},
		{"bad url", []string{"http://%zz"}, 1, "url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			start := time.Now()
			code := run(append([]string{"probe"}, tc.args...), &out, &out)
			if code != tc.want {
				t.Fatalf("exit %d, want %d; output %q", code, tc.want, out.String())
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Errorf("output %q, want it to contain %q", out.String(), tc.out)
			}
			if tc.out == "" && out.Len() != 0 {
				t.Errorf("-q printed %q", out.String())
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s; the timeout must bound it", d)
			}
		})
	}
}
