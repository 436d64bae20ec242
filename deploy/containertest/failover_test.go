package containertest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"

	"github.com/valyala/fasthttp"
)

// The failover scenarios of issue 15: each starts its own private network
// with three test backends (addressed by DNS name) and kelpie, runs a steady
// GET load from a client that never retries, injects one fault, and asserts
// 0 client-visible errors and a detection time within the bound computed
// from the configured probe settings. Each logs what it measured.

// warmUp waits until the load has had n successful answers.
func warmUp(t *testing.T, l *load, n int) {
	t.Helper()
	base := l.snapshot().OK
	testkit.Eventually(t, 30*time.Second, fmt.Sprintf("%d more successful requests", n), func() bool { return l.snapshot().OK >= base+n })
}

func TestContainerImage(t *testing.T) {
	e := newEnv(t, envOptions{})
	img := e.img.Kelpie
	size, err := strconv.ParseInt(MustDocker(t, "image", "inspect", "--format", "{{.Size}}", img), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if size >= 25<<20 {
		t.Errorf("image is %d bytes, want under 25 MiB", size)
	}
	if u := MustDocker(t, "image", "inspect", "--format", "{{.Config.User}}", img); u != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532 (non-root)", u)
	}
	if hc := MustDocker(t, "image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", img); !strings.HasPrefix(hc, `["CMD","/kelpie","probe"`) {
		t.Errorf("HEALTHCHECK %s: want exec form running kelpie probe", hc)
	}
	if _, err := Docker("exec", e.kelpie.ID, "/bin/sh", "-c", "true"); err == nil {
		t.Error("the image has a shell")
	}
	if out, err := Docker("exec", e.kelpie.ID, "/kelpie", "probe", "http://127.0.0.1:9901/readyz"); err != nil {
		t.Errorf("kelpie probe /readyz inside the container: %v", err)
	} else {
		t.Logf("probe: %s", out)
	}
	// The CA bundle, for Consul over HTTPS.
	dir := t.TempDir()
	MustDocker(t, "cp", e.kelpie.ID+":/etc/ssl/certs/ca-certificates.crt", dir)
	if fi, err := os.Stat(filepath.Join(dir, "ca-certificates.crt")); err != nil || fi.Size() < 1000 {
		t.Errorf("CA certificates in the image: %v", err)
	}
	testkit.Eventually(t, 40*time.Second, "docker reports the container healthy (HEALTHCHECK)", func() bool {
		return e.kelpie.Inspect(t, "{{.State.Health.Status}}") == "healthy"
	})

	// -watch in a container: an editor-style replace of the mounted file
	// (a new inode) reloads; b3 leaves the pool.
	path := filepath.Join(e.confDir, "kelpie.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), "      - address: \"b3:8080\"\n", "", 1)
	if err := os.WriteFile(path+".new", []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "b3 gone after the watched file changed", func() bool {
		for _, b := range e.backendStates() {
			if strings.HasPrefix(b.Address, "b3:") {
				return false
			}
		}
		return len(e.backendStates()) == 2
	})
	// docker kill -s HUP reloads too: put b3 back and signal.
	if err := os.WriteFile(path+".new", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	MustDocker(t, "kill", "-s", "HUP", e.kelpie.ID)
	testkit.Eventually(t, 10*time.Second, "b3 back after the reload", func() bool { return e.eligible("b3") })
}

func TestContainerBackendKilled(t *testing.T) {
	e := newEnv(t, envOptions{})
	l := startLoad(t, e.proxy, "/")
	warmUp(t, l, loadRate)
	start := time.Now()
	MustDocker(t, "kill", e.backends["b2"].ID)
	d := e.timeUntil(start, activeBound()+slack, "killed b2 out of rotation", func() bool { return !e.eligible("b2") })
	warmUp(t, l, 2*loadRate)
	r := l.stop()
	requireNoErrors(t, r)
	t.Logf("backend killed: detected in %s (bound %s + %s slack); load: %s", d.Round(time.Millisecond), activeBound(), slack, r)
}

func TestContainerBackendPaused(t *testing.T) {
	e := newEnv(t, envOptions{})
	l := startLoad(t, e.proxy, "/")
	warmUp(t, l, loadRate)
	start := time.Now()
	MustDocker(t, "pause", e.backends["b2"].ID)
	d := e.timeUntil(start, activeBound()+slack, "paused b2 out of rotation", func() bool { return !e.eligible("b2") })
	warmUp(t, l, 2*loadRate)
	MustDocker(t, "unpause", e.backends["b2"].ID)
	back := time.Now()
	e.timeUntil(back, 15*time.Second, "unpaused b2 back in rotation", func() bool { return e.eligible("b2") })
	warmUp(t, l, loadRate)
	r := l.stop()
	requireNoErrors(t, r)
	if r.Slowest > responseTO+2*time.Second {
		t.Errorf("slowest request %s: a hung backend must cost a request about timeouts.response (%s) plus a retry", r.Slowest, responseTO)
	}
	t.Logf("backend paused (hung host): detected in %s (bound %s + %s slack), back %s after unpause; load: %s",
		d.Round(time.Millisecond), activeBound(), slack, time.Since(back).Round(time.Millisecond), r)
}

func TestContainerBackendDisconnected(t *testing.T) {
	e := newEnv(t, envOptions{})
	l := startLoad(t, e.proxy, "/")
	warmUp(t, l, loadRate)
	start := time.Now()
	MustDocker(t, "network", "disconnect", e.net, e.backends["b2"].ID)
	d := e.timeUntil(start, activeBound()+slack, "disconnected b2 out of rotation", func() bool { return !e.eligible("b2") })
	warmUp(t, l, 2*loadRate)
	MustDocker(t, "network", "connect", "--alias", "b2", e.net, e.backends["b2"].ID)
	back := time.Now()
	e.timeUntil(back, 15*time.Second, "reconnected b2 back in rotation", func() bool { return e.eligible("b2") })
	warmUp(t, l, loadRate)
	r := l.stop()
	requireNoErrors(t, r)
	t.Logf("backend disconnected (black hole): detected in %s (bound %s + %s slack), back %s after reconnect; load: %s",
		d.Round(time.Millisecond), activeBound(), slack, time.Since(back).Round(time.Millisecond), r)
}

func TestContainerRollingRestart(t *testing.T) {
	e := newEnv(t, envOptions{})
	l := startLoad(t, e.proxy, "/")
	warmUp(t, l, loadRate)
	var ds []string
	for _, name := range []string{"b1", "b2", "b3"} {
		c := e.backends[name]
		start := time.Now()
		MustDocker(t, "restart", "-t", "5", c.ID)
		took := time.Since(start)
		e.timeUntil(start, 30*time.Second, name+" back in rotation after its restart", func() bool { return e.eligible(name) })
		served := l.snapshot().By[name]
		testkit.Eventually(t, 15*time.Second, name+" serving again", func() bool { return l.snapshot().By[name] > served })
		ds = append(ds, fmt.Sprintf("%s restart %s, back after %s", name, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)))
	}
	r := l.stop()
	requireNoErrors(t, r)
	t.Logf("rolling restart: %s; load: %s", strings.Join(ds, "; "), r)
}

// TestContainerKelpieStopped stops kelpie's container (SIGTERM) with slow
// requests in flight: /readyz turns 503 at once, every request finishes,
// and the container exits 0.
func TestContainerKelpieStopped(t *testing.T) {
	const n, delay = 20, 3 * time.Second
	e := newEnv(t, envOptions{response: 2 * delay})
	c := &fasthttp.HostClient{Addr: e.proxy, MaxConns: n, MaxIdemponentCallAttempts: 1, ReadTimeout: 30 * time.Second}
	var wg sync.WaitGroup
	codes := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body, err := c.GetTimeout(nil, fmt.Sprintf("http://%s/?delay=%s", e.proxy, delay), 30*time.Second)
			if err != nil {
				codes <- err.Error()
				return
			}
			codes <- fmt.Sprintf("%d %s", status, strings.TrimSpace(string(body)))
		}()
	}
	testkit.Eventually(t, 10*time.Second, "all requests in flight at the backends", func() bool {
		var in int64
		for _, b := range e.backendStates() {
			in += b.InFlight
		}
		return in == n
	})
	start := time.Now()
	stopped := make(chan error, 1)
	go func() {
		_, err := Docker("stop", "-t", "30", e.kelpie.ID)
		stopped <- err
	}()
	testkit.Eventually(t, 5*time.Second, "/readyz 503 while draining", func() bool {
		resp, err := http.Get(e.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	wg.Wait()
	close(codes)
	bad := 0
	for c := range codes {
		if !strings.HasPrefix(c, "200 hello from b") {
			bad++
			t.Errorf("in-flight request: %s", c)
		}
	}
	if code := e.kelpie.Inspect(t, "{{.State.ExitCode}}"); code != "0" {
		t.Errorf("kelpie exited %s after docker stop, want 0", code)
	}
	if took >= 20*time.Second {
		t.Errorf("docker stop took %s: longer than shutdown.grace", took)
	}
	t.Logf("kelpie stopped with %d requests in flight: %d failed, stop took %s (requests had up to %s left)", n, bad, took.Round(time.Millisecond), delay)
}
