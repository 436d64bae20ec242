package main

// End-to-end cluster tests: several whole kelpies in this process, one real
// Consul agent, fleet drains through the CLI and the admin API, and an HA
// pair handing over at shutdown.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/admin"
	"github.com/kelpie-lb/kelpie/cluster"
	"github.com/kelpie-lb/kelpie/discovery/consultest"
	"github.com/kelpie-lb/kelpie/internal/testkit"
	"github.com/valyala/fasthttp"
)

func needConsulAgent(t *testing.T) *consultest.Agent {
	t.Helper()
	return consultest.Start(t)
}

func clusterYAML(agent *consultest.Agent, id, extra string, backends ...string) string {
	return fmt.Sprintf(`
consul: {address: %q}
cluster: {name: edge, register: true, id: %s}
%s
upstreams:
  - name: web
    backends:
%s`, agent.HTTPAddr, id, extra, yamlBackends(backends...))
}

// drainOf returns the admin state and drain scope of addr in web.
func (ta *testApp) drainOf(t *testing.T, addr string) (string, string) {
	t.Helper()
	for _, u := range ta.Upstreams(t).Upstreams {
		for _, b := range u.Backends {
			if u.Name == "web" && b.Address == addr {
				if b.Drain == nil {
					return b.Admin, ""
				}
				return b.Admin, b.Drain.Scope + ":" + b.Drain.Reason
			}
		}
	}
	t.Fatalf("no backend %s", addr)
	return "", ""
}

func TestFleetDrainAcrossKelpies(t *testing.T) {
	agent := needConsulAgent(t)
	b1, b2 := startBackend(t, named("b1")), startBackend(t, named("b2"))
	apps := []*testApp{
		startApp(t, clusterYAML(agent, "kelpie-a", "", b1.Addr, b2.Addr)),
		startApp(t, clusterYAML(agent, "kelpie-b", "", b1.Addr, b2.Addr)),
		startApp(t, clusterYAML(agent, "kelpie-c", "", b1.Addr, b2.Addr)),
	}

	// All three registered, tagged with the cluster name, and passing
	// their /readyz check.
	eventually(t, 15*time.Second, "three kelpies registered and passing", func() bool {
		entries, _, err := agent.Client.Health().Service(cluster.ServiceName, "edge", true, nil)
		return err == nil && len(entries) == 3
	})

	var out, errOut bytes.Buffer
	start := time.Now()
	if code := runDrain([]string{"-admin", apps[0].AdminURL, "-fleet", "-reason", "kernel upgrade", "web", b1.Addr}, &out, &errOut); code != 0 {
		t.Fatalf("kelpie drain -fleet: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "scope=fleet") || !strings.Contains(out.String(), `reason="kernel upgrade"`) {
		t.Errorf("drain output: %q", out.String())
	}
	for i, ta := range apps {
		eventually(t, 2*time.Second, fmt.Sprintf("kelpie %d drained %s", i, b1.Addr), func() bool {
			adm, scope := ta.drainOf(t, b1.Addr)
			return adm != "ready" && scope == "fleet:kernel upgrade"
		})
		t.Logf("kelpie %d: drained after %v", i, time.Since(start))
	}
	for i := 0; i < 6; i++ {
		if code, body := apps[1].Get(t, "/"); code != 200 || body != "b2" {
			t.Fatalf("request %d through a drained fleet: %d %q", i, code, body)
		}
	}
	table := &bytes.Buffer{}
	if code := runBackends([]string{"-admin", apps[2].AdminURL}, table, &errOut); code != 0 || !strings.Contains(table.String(), "drained(fleet)") {
		t.Errorf("kelpie backends: exit %d\n%s", code, table)
	}

	// A local ready cannot undo a fleet drain; ready -fleet does, everywhere.
	errOut.Reset()
	if code := runReady([]string{"-admin", apps[2].AdminURL, "web", b1.Addr}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "fleet") {
		t.Errorf("local ready of a fleet drain: exit %d: %s", code, errOut.String())
	}
	if code := runReady([]string{"-admin", apps[2].AdminURL, "-fleet", "web", b1.Addr}, &out, &errOut); code != 0 {
		t.Fatalf("kelpie ready -fleet: exit %d: %s", code, errOut.String())
	}
	for i, ta := range apps {
		eventually(t, 2*time.Second, fmt.Sprintf("kelpie %d readied %s", i, b1.Addr), func() bool {
			adm, _ := ta.drainOf(t, b1.Addr)
			return adm == "ready"
		})
	}

	// Clean shutdown deregisters.
	if err := apps[0].shutdown(); err != nil {
		t.Fatal(err)
	}
	entries, _, err := agent.Client.Health().Service(cluster.ServiceName, "edge", false, nil)
	if err != nil || len(entries) != 2 {
		t.Fatalf("after one shutdown: %d instances, %v", len(entries), err)
	}
}

func haOf(t *testing.T, ta *testApp) cluster.HAStatus {
	t.Helper()
	var st cluster.HAStatus
	if _, err := (&admin.Client{BaseURL: ta.AdminURL}).HA(t.Context(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func metricLine(t *testing.T, ta *testApp, prefix string) string {
	t.Helper()
	resp, err := http.Get(ta.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestHAPairHandsOverAtShutdown(t *testing.T) {
	agent := needConsulAgent(t)
	b1 := startBackend(t, named("b1"))
	a := startApp(t, clusterYAML(agent, "kelpie-a", "ha: {enabled: true}", b1.Addr))
	b := startApp(t, clusterYAML(agent, "kelpie-b", "ha: {enabled: true}", b1.Addr))

	var leader, standby *testApp
	eventually(t, 10*time.Second, "one leader", func() bool {
		sa, sb := haOf(t, a), haOf(t, b)
		switch {
		case sa.Role == cluster.RoleLeader && sb.Role == cluster.RoleStandby && sb.Leader == "kelpie-a":
			leader, standby = a, b
		case sb.Role == cluster.RoleLeader && sa.Role == cluster.RoleStandby && sa.Leader == "kelpie-b":
			leader, standby = b, a
		}
		return leader != nil
	})
	st := haOf(t, leader)
	raw, _ := json.Marshal(st)
	for _, k := range []string{`"role"`, `"leader"`, `"fencing_token"`, `"since"`, `"vip"`} {
		if !bytes.Contains(raw, []byte(k)) {
			t.Errorf("GET /api/v1/ha lacks %s: %s", k, raw)
		}
	}
	if st.FencingToken == 0 {
		t.Errorf("leader without a fencing token: %s", raw)
	}
	if l := metricLine(t, leader, "kelpie_ha_leader "); l != "kelpie_ha_leader 1" {
		t.Errorf("leader metric %q", l)
	}
	if l := metricLine(t, standby, "kelpie_ha_leader "); l != "kelpie_ha_leader 0" {
		t.Errorf("standby metric %q", l)
	}
	if l := metricLine(t, leader, `kelpie_ha_transitions_total{to="leader"}`); !strings.HasSuffix(l, " 1") {
		t.Errorf("transitions metric %q", l)
	}

	// The leader steps down first thing at shutdown.
	start := time.Now()
	if err := leader.shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "standby leads", func() bool { return haOf(t, standby).Role == cluster.RoleLeader })
	t.Logf("handover at shutdown: %v", time.Since(start))
	if got := haOf(t, standby).FencingToken; got <= st.FencingToken {
		t.Errorf("fencing token %d after %d", got, st.FencingToken)
	}
	pair, _, err := agent.Client.KV().Get("kelpie/edge/leader", &api.QueryOptions{RequireConsistent: true})
	if err != nil || pair == nil || !strings.Contains(string(pair.Value), haOf(t, standby).ID) {
		t.Errorf("lock key: %+v %v", pair, err)
	}
}

// TestHALeaderProcessKilled runs two real kelpie processes and kills the
// leader with SIGKILL: no step-down, no release, its session must die with
// its heartbeat check. The standby must lead within 3s.
func TestHALeaderProcessKilled(t *testing.T) {
	agent := needConsulAgent(t)
	bin, err := buildKelpie()
	if err != nil {
		t.Fatal(err)
	}
	be := startBackend(t, named("one"))
	type proc struct {
		cmd    *exec.Cmd
		admin  string
		exited chan struct{}
		logs   *testkit.LogBuffer
	}
	start := func(id string) *proc {
		listen, adminAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
		path := filepath.Join(t.TempDir(), "kelpie.yaml")
		yaml := fmt.Sprintf("listen: %q\nadmin: {listen: %q}\n", listen, adminAddr) +
			clusterYAML(agent, id, "ha: {enabled: true}", be.Addr)
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		p := &proc{cmd: exec.Command(bin, "run", "-config", path), admin: "http://" + adminAddr, exited: make(chan struct{}), logs: &testkit.LogBuffer{}}
		p.cmd.Stdout, p.cmd.Stderr = io.Discard, p.logs
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.cmd.Wait(); close(p.exited) }()
		t.Cleanup(func() {
			p.cmd.Process.Kill()
			<-p.exited
			if t.Failed() {
				t.Logf("%s log:\n%s", id, p.logs.String())
			}
		})
		return p
	}
	role := func(p *proc) cluster.Role {
		var st cluster.HAStatus
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := (&admin.Client{BaseURL: p.admin}).HA(ctx, &st); err != nil {
			return ""
		}
		return st.Role
	}
	a, b := start("kelpie-a"), start("kelpie-b")
	var leader, standby *proc
	eventually(t, 15*time.Second, "one leader", func() bool {
		ra, rb := role(a), role(b)
		switch {
		case ra == cluster.RoleLeader && rb == cluster.RoleStandby:
			leader, standby = a, b
		case rb == cluster.RoleLeader && ra == cluster.RoleStandby:
			leader, standby = b, a
		}
		return leader != nil
	})
	killed := time.Now()
	if err := leader.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-leader.exited
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if role(standby) == cluster.RoleLeader {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("standby not leading 10s after the leader was killed")
		}
	}
	took := time.Since(killed)
	t.Logf("leader killed (SIGKILL): standby leads after %v", took)
	if took > 3*time.Second {
		t.Errorf("takeover took %v, want within 3s", took)
	}
}

// TestHAFencingHeader: the leader sends its fencing token to backends; a
// client cannot forge one.
func TestHAFencingHeader(t *testing.T) {
	agent := needConsulAgent(t)
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.WriteString("token=" + strings.Join(headerValues(&ctx.Request.Header, "X-Kelpie-Fencing-Token"), ","))
	})
	a := startApp(t, clusterYAML(agent, "kelpie-a", "ha: {enabled: true, fencing_header: X-Kelpie-Fencing-Token}", be.Addr))
	eventually(t, 10*time.Second, "leader", func() bool { return haOf(t, a).Role == cluster.RoleLeader })
	b := startApp(t, clusterYAML(agent, "kelpie-b", "ha: {enabled: true, fencing_header: X-Kelpie-Fencing-Token}", be.Addr))
	eventually(t, 10*time.Second, "standby", func() bool { return haOf(t, b).Leader == "kelpie-a" })
	tok := haOf(t, a).FencingToken

	forged := func(ta *testApp) string {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + ta.ProxyAddr + "/")
		req.Header.Add("X-Kelpie-Fencing-Token", "999999")
		req.Header.Add("x-kelpie-fencing-token", "999998")
		if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		return string(resp.Body())
	}
	if got, want := forged(a), fmt.Sprintf("token=%d", tok); got != want {
		t.Errorf("through the leader the backend saw %q, want %q", got, want)
	}
	if got := forged(b); got != "token=" {
		t.Errorf("through the standby the backend saw %q, want no token", got)
	}
}

func headerValues(h *fasthttp.RequestHeader, name string) []string {
	var out []string
	for k, v := range h.All() {
		if strings.EqualFold(string(k), name) {
			out = append(out, string(v))
		}
	}
	return out
}

// TestHAWithoutNetAdmin: a VIP without CAP_NET_ADMIN is one clear error at
// start, exit 1. The capability is dropped with setpriv(1) from the
// bounding set, so the exec'd kelpie has none.
func TestHAWithoutNetAdmin(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		testkit.Missing(t, "root and setpriv(1) to start kelpie without CAP_NET_ADMIN", "run as root; apt-get install -y util-linux")
	}
	bin, err := buildKelpie()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kelpie.yaml")
	yaml := fmt.Sprintf("listen: %q\nadmin: {listen: %q}\nconsul: {address: %q}\ncluster: {name: edge}\n"+
		"ha: {enabled: true, vip: {address: 127.0.0.9, interface: lo}}\nupstreams: [{name: web, backends: [{address: \"127.0.0.1:9\"}]}]\n",
		testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t))
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, setpriv, "--bounding-set=-net_admin", "--inh-caps=-net_admin", bin, "run", "-config", path).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v:\n%s", err, out)
	}
	if n := strings.Count(string(out), "level=ERROR"); n != 1 || !strings.Contains(string(out), "needs CAP_NET_ADMIN") {
		t.Fatalf("want one error saying it needs CAP_NET_ADMIN, got %d errors:\n%s", n, out)
	}
}

// TestHANonRootWithBoundedNetAdmin is docker run --cap-add NET_ADMIN with
// the image's non-root USER: setpriv switches to UID 65532, which clears the
// effective set and leaves CAP_NET_ADMIN in the bounding set only. The one
// error at start names both remedies.
func TestHANonRootWithBoundedNetAdmin(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		testkit.Missing(t, "root and setpriv(1) to start kelpie as UID 65532", "run as root; apt-get install -y util-linux")
	}
	built, err := buildKelpie()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // readable by UID 65532: the binary and the config
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.ReadFile(built)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "kelpie")
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kelpie.yaml")
	yaml := fmt.Sprintf("listen: %q\nadmin: {listen: %q}\nconsul: {address: %q}\ncluster: {name: edge}\n"+
		"ha: {enabled: true, vip: {address: 127.0.0.9, interface: lo}}\nupstreams: [{name: web, backends: [{address: \"127.0.0.1:9\"}]}]\n",
		testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t))
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, setpriv, "--reuid=65532", "--regid=65532", "--clear-groups", bin, "run", "-config", path).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v:\n%s", err, out)
	}
	s := string(out)
	if n := strings.Count(s, "level=ERROR"); n != 1 || !strings.Contains(s, "needs CAP_NET_ADMIN") ||
		!strings.Contains(s, "UID 65532") || !strings.Contains(s, "--user 0:0 --cap-add NET_ADMIN") || !strings.Contains(s, "setcap cap_net_admin+ep") {
		t.Fatalf("want one error naming --user 0:0 and setcap, got %d errors:\n%s", n, out)
	}
	t.Logf("%s", out)
}
