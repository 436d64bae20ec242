package containertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveImages()
	os.Exit(code)
}

// The failover settings every scenario runs with; the detection bounds the
// tests assert are computed from them.
const (
	probeInterval = 500 * time.Millisecond
	probeTimeout  = 300 * time.Millisecond
	probeFall     = 2
	probeRise     = 2
	connectTO     = 300 * time.Millisecond
	responseTO    = time.Second
	// slack covers what the bound does not: the docker command that
	// injects the fault, the admin API poll and a busy 2-core machine.
	slack = 1500 * time.Millisecond
)

// activeBound is the worst case for a fault only the active probes see:
// up to one interval until the next probe, fall probes, the last one
// timing out.
func activeBound() time.Duration {
	return time.Duration(probeFall)*probeInterval + probeTimeout
}

// env is one private network with the test backends and a kelpie container
// in front of them, its ports published on 127.0.0.1.
type env struct {
	t        *testing.T
	img      Images
	net      string
	backends map[string]*Container // by DNS alias: b1, b2, b3
	kelpie   *Container
	proxy    string // 127.0.0.1:PORT of kelpie's proxy
	admin    string // http://127.0.0.1:PORT of kelpie's admin API
	token    string
	confDir  string
	pprof    string // http://127.0.0.1:PORT of kelpie's -pprof listener
}

// adminClient bounds every admin API call: a kelpie that stops answering
// fails the test with a goroutine dump instead of hanging it.
var adminClient = &http.Client{Timeout: 5 * time.Second}

// dumpGoroutines logs kelpie's goroutines (from -pprof), for a test that
// failed or found kelpie hung.
func (e *env) dumpGoroutines() {
	resp, err := adminClient.Get(e.pprof + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		e.t.Logf("goroutine dump: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	e.t.Logf("kelpie's goroutines:\n%s", b)
}

// envOptions shape an env.
type envOptions struct {
	backends int           // default 3
	upstream string        // the upstream's YAML body after "- name: web\n"; default: static b1..bN by name
	extra    string        // extra top-level YAML (consul: ...)
	response time.Duration // timeouts.response; default responseTO
	network  string        // an existing network to use; default a new one
}

func newEnv(t *testing.T, o envOptions) *env {
	RequireEngine(t)
	if o.backends == 0 {
		o.backends = 3
	}
	if o.network == "" {
		o.network = Network(t)
	}
	e := &env{t: t, img: BuildImages(t), net: o.network, backends: map[string]*Container{}, token: UniqueName("token")}
	for i := 1; i <= o.backends; i++ {
		alias := fmt.Sprintf("b%d", i)
		e.backends[alias] = e.startBackend(alias)
	}
	if o.response == 0 {
		o.response = responseTO
	}
	if o.upstream == "" {
		var sb strings.Builder
		sb.WriteString("    backends:\n")
		for i := 1; i <= o.backends; i++ {
			fmt.Fprintf(&sb, "      - address: \"b%d:8080\"\n", i)
		}
		o.upstream = sb.String()
	}
	e.confDir = t.TempDir()
	os.Chmod(e.confDir, 0o755) // readable by the image's UID 65532
	conf := fmt.Sprintf(`listen: ":8080"
admin:
  listen: ":9901"
  token_env: KELPIE_ADMIN_TOKEN
shutdown:
  grace: 20s
%supstreams:
  - name: web
%s    health:
      active: {path: /health, interval: %s, timeout: %s, rise: %d, fall: %d}
      passive: {consecutive_failures: 3, ejection: 5s}
    retries: {attempts: 2}
    timeouts: {connect: %s, response: %s}
    slow_start: 0s
`, o.extra, o.upstream, probeInterval, probeTimeout, probeRise, probeFall, connectTO, o.response)
	if err := os.WriteFile(filepath.Join(e.confDir, "kelpie.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.kelpie = Run(t, "kelpie-test-kelpie",
		"--network", e.net, "--network-alias", "kelpie",
		"-p", "127.0.0.1::8080", "-p", "127.0.0.1::9901", "-p", "127.0.0.1::6060",
		"-v", e.confDir+":/etc/kelpie:ro",
		"-e", "KELPIE_ADMIN_TOKEN="+e.token,
		"--stop-timeout", "30",
		e.img.Kelpie, "run", "-watch", "-pprof", ":6060")
	e.proxy = e.kelpie.HostPort(t, "8080/tcp")
	e.admin = "http://" + e.kelpie.HostPort(t, "9901/tcp")
	e.pprof = "http://" + e.kelpie.HostPort(t, "6060/tcp")
	t.Cleanup(func() { // before the container's removal (cleanups run last-first)
		if t.Failed() {
			e.dumpGoroutines()
		}
	})
	e.waitReady()
	return e
}

// startBackend starts one test backend reachable on the network as alias.
func (e *env) startBackend(alias string) *Container {
	return Run(e.t, "kelpie-test-"+alias,
		"--network", e.net, "--network-alias", alias,
		e.img.Backend, "-listen", ":8080", "-name", alias, "-delays")
}

func (e *env) waitReady() {
	e.t.Helper()
	testkit.Eventually(e.t, 30*time.Second, "kelpie ready with every backend eligible", func() bool {
		resp, err := adminClient.Get(e.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return false
		}
		for _, b := range e.backendStates() {
			if !b.Eligible {
				return false
			}
		}
		return true
	})
}

// backendState is what the admin API says about one backend.
type backendState struct {
	Address  string `json:"address"`
	Health   string `json:"health"`
	Ejected  bool   `json:"ejected"`
	Eligible bool   `json:"eligible"`
	Admin    string `json:"admin"`
	Requests int64  `json:"requests"`
	InFlight int64  `json:"in_flight"`
}

func (e *env) backendStates() []backendState {
	resp, err := adminClient.Get(e.admin + "/api/v1/upstreams")
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Timeout") {
			e.dumpGoroutines()
			e.t.Fatalf("kelpie's admin API hung: %v", err)
		}
		return nil
	}
	defer resp.Body.Close()
	var v struct {
		Upstreams []struct {
			Name     string         `json:"name"`
			Backends []backendState `json:"backends"`
		} `json:"upstreams"`
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil || len(v.Upstreams) == 0 {
		return nil
	}
	return v.Upstreams[0].Backends
}

// eligible reports whether the backend whose address starts with host is
// in rotation; false when it is not in the pool at all.
func (e *env) eligible(host string) bool {
	for _, b := range e.backendStates() {
		if strings.HasPrefix(b.Address, host+":") {
			return b.Eligible
		}
	}
	return false
}

// timeUntil polls cond every 20ms for up to limit and returns how long it
// took to hold, measured from start; it fails the test if it never held.
func (e *env) timeUntil(start time.Time, limit time.Duration, what string, cond func() bool) time.Duration {
	e.t.Helper()
	deadline := start.Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("%s: not within %s; backends: %+v", what, limit, e.backendStates())
	return 0
}
