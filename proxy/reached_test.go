package proxy

import "testing"

// TestReachedBackendMarked: kelpie's own 502/504 says, in a header and the
// access log, whether the request reached a backend (so a failed POST may
// have run); a request no backend saw carries no mark.
func TestReachedBackendMarked(t *testing.T) {
	cases := []struct {
		name    string
		method  string
		retries int
		scripts [][]step
		status  int
		reached bool
	}{
		{"POST reset after sending", "POST", 1, [][]step{{reset}, {ok("b")}}, 502, true},
		{"POST timed out", "POST", 1, [][]step{{upTimeout}, {ok("b")}}, 504, true},
		{"connect refused everywhere", "POST", 1, [][]step{{refused}, {refused}}, 502, false},
		{"GET sent, then a refused retry", "GET", 1, [][]step{{reset}, {refused}}, 502, true},
		{"GET answered by a retry", "GET", 1, [][]step{{reset}, {ok("b")}}, 200, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sp := newScriptedProxy(t, tc.retries, tc.scripts...)
			req := tc.method + " / HTTP/1.1\r\nHost: a\r\n\r\n"
			if tc.method == "POST" {
				req = tc.method + " / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
			}
			resp := sp.serve(t, req)
			if resp.StatusCode() != tc.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode(), resp.Body(), tc.status)
			}
			if got := string(resp.Header.Peek(HeaderReachedBackend)) == "true"; got != tc.reached {
				t.Errorf("%s header present=%v, want %v", HeaderReachedBackend, got, tc.reached)
			}
			if got := sp.log.last(t)["reached_backend"].Bool(); got != tc.reached {
				t.Errorf("access log reached_backend=%v, want %v", got, tc.reached)
			}
		})
	}
}

// TestReachedBackendNotForged: a backend that sends X-Kelpie-Reached-Backend
// itself does not get it to the client or into the access log, whatever its
// status; only kelpie's own failure answers carry the mark.
func TestReachedBackendNotForged(t *testing.T) {
	for _, status := range []int{200, 502, 504} {
		forged := step{status: status, body: "x", header: [2]string{"x-kelpie-reached-backend", "true"}}
		sp := newScriptedProxy(t, 0, []step{forged})
		resp := sp.serve(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode() != status {
			t.Fatalf("status %d, want the backend's %d", resp.StatusCode(), status)
		}
		if v := resp.Header.Peek(HeaderReachedBackend); v != nil {
			t.Errorf("backend's %d: client got %s: %q, want it stripped", status, HeaderReachedBackend, v)
		}
		if sp.log.last(t)["reached_backend"].Bool() {
			t.Errorf("backend's %d: access log reached_backend=true, want false", status)
		}
	}
}
