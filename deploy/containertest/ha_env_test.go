package containertest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// The HA suite of issue 16: a 3-server Consul cluster (Raft) in containers,
// a client agent per kelpie, two kelpie containers with NET_ADMIN sharing a
// VIP on a private network, two backends, a client container sampling the
// VIP every 50 ms, and next to each kelpie a sampler in its network
// namespace that records every 50 ms whether the kernel holds the VIP there
// and what the kelpie's /api/v1/ha says (it keeps seeing both when the kelpie
// is cut off from the network).

// haSample is one line of hasampler's output.
type haSample struct {
	T   int64 `json:"t"`
	VIP bool  `json:"vip"`
	R   []struct {
		Code    int    `json:"code"`
		Err     string `json:"err"`
		Backend string `json:"backend"`
		ID      string `json:"id"`
		Role    string `json:"role"`
		Held    bool   `json:"held"`
		Token   uint64 `json:"token"`
	} `json:"r"`
}

func (s haSample) at() time.Time { return time.Unix(0, s.T) }

// samplerImage builds hasampler into a scratch image once, removed with
// the other images.
func samplerImage(t *testing.T) string {
	t.Helper()
	imagesMu.Lock()
	defer imagesMu.Unlock()
	if name, ok := built["hasampler"]; ok {
		return name
	}
	name := runTag + "-hasampler:test"
	ctx := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctx, "hasampler"), "./deploy/containertest/hasampler")
	build.Dir, build.Env = Root(t), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hasampler: %v\n%s", err, out)
	}
	df := "FROM scratch\nCOPY hasampler /hasampler\nUSER 65532:65532\nENTRYPOINT [\"/hasampler\"]\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Docker("build", "-q", "-t", name, ctx)
	if id, ierr := Docker("image", "inspect", "--format", "{{.Id}}", name); ierr == nil {
		imageIDs = append(imageIDs, id)
	}
	if err != nil {
		t.Fatal(err)
	}
	built["hasampler"] = name
	return name
}

// haKelpie is one kelpie container of the pair.
type haKelpie struct {
	id      string // cluster.id, as /api/v1/ha reports it
	alias   string
	c       *Container
	admin   string     // http://127.0.0.1:PORT, re-read after a restart
	sampler *Container // in the kelpie's network namespace
}

type haEnv struct {
	t       *testing.T
	net     string
	vip     string
	img     Images
	sampler string
	servers []*Container
	consul  string // http://127.0.0.1:PORT of agent ca
	kelpies map[string]*haKelpie
	client  *Container // samples the VIP
	token   string
}

var haClient = &http.Client{Timeout: 2 * time.Second}

func newHAEnv(t *testing.T) *haEnv {
	RequireEngine(t)
	e := &haEnv{t: t, img: BuildImages(t), sampler: samplerImage(t), net: Network(t), kelpies: map[string]*haKelpie{}, token: UniqueName("token")}
	consul := ConsulImage(t)

	// The VIP: an address of the network's subnet that Docker's IPAM,
	// handing out addresses from the bottom, does not reach with a dozen
	// containers.
	subnet := MustDocker(t, "network", "inspect", "--format", "{{(index .IPAM.Config 0).Subnet}}", e.net)
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !p.Addr().Is4() || p.Bits() > 24 {
		t.Fatalf("network %s: subnet %q: want an IPv4 /24 or larger", e.net, subnet)
	}
	b := p.Masked().Addr().As4()
	b[3] = 200
	e.vip = netip.AddrFrom4(b).String()

	agentArgs := func(node string) []string {
		return []string{"agent", "-node", node, "-data-dir", "/data",
			"-bind", `{{ GetInterfaceIP "eth0" }}`, "-client", "0.0.0.0",
			"-retry-join", "s1", "-retry-join", "s2", "-retry-join", "s3", "-retry-interval", "500ms",
			"-log-level", "warn", "-hcl", "disable_update_check = true",
			"-hcl", "performance { raft_multiplier = 1 }", "-hcl", "connect { enabled = false }"}
	}
	// Root in the container: the data directory lives in the container's
	// own layer, so a server survives docker kill + docker start.
	for i := 1; i <= 3; i++ {
		s := fmt.Sprintf("s%d", i)
		e.servers = append(e.servers, Run(t, "kelpie-test-consul-"+s, append([]string{"--network", e.net, "--network-alias", s, "--user", "0:0",
			consul}, append(agentArgs(s), "-server", "-bootstrap-expect", "3")...)...))
	}
	for _, a := range []string{"ca", "cb"} {
		c := Run(t, "kelpie-test-consul-"+a, append([]string{"--network", e.net, "--network-alias", a, "--user", "0:0",
			"-p", "127.0.0.1::8500", consul}, agentArgs(a)...)...)
		if a == "ca" {
			e.consul = "http://" + c.HostPort(t, "8500/tcp")
		}
	}
	testkit.Eventually(t, 60*time.Second, "3 consul servers with a raft leader, both client agents joined", func() bool {
		var peers []string
		var nodes []struct{ Node string }
		return e.getJSON(e.consul+"/v1/status/peers", &peers) && len(peers) == 3 && e.raftLeader() != "" &&
			e.getJSON(e.consul+"/v1/catalog/nodes", &nodes) && len(nodes) == 5
	})

	for _, name := range []string{"b1", "b2"} {
		Run(t, "kelpie-test-"+name, "--network", e.net, "--network-alias", name, e.img.Backend, "-listen", ":8080", "-name", name)
	}
	// a first, so that it leads; then b.
	e.startKelpie("a", "ca")
	testkit.Eventually(t, 30*time.Second, "kelpie-a leads", func() bool { return e.ha("a").Role == "leader" })
	e.startKelpie("b", "cb")
	testkit.Eventually(t, 30*time.Second, "kelpie-b standby", func() bool { return e.ha("b").Role == "standby" })
	e.client = Run(t, "kelpie-test-haclient", "--network", e.net, e.sampler,
		"http://"+e.vip+":8080/", "http://"+e.vip+":9901/api/v1/ha")
	testkit.Eventually(t, 10*time.Second, "the client reaches kelpie-a at the VIP", func() bool {
		s := e.samples(e.client)
		return len(s) > 0 && s[len(s)-1].R[0].Code == 200 && s[len(s)-1].R[1].ID == "kelpie-a"
	})
	return e
}

// startKelpie starts kelpie <name> talking to Consul agent <agent>, and its
// sampler.
func (e *haEnv) startKelpie(name, agent string) {
	t := e.t
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	conf := fmt.Sprintf(`listen: ":8080"
admin: {listen: ":9901", token_env: KELPIE_ADMIN_TOKEN}
consul: {address: "%s:8500"}
cluster: {name: hatest, id: kelpie-%s}
ha:
  enabled: true
  vip: {address: %q, interface: eth0}
  fencing_header: X-Kelpie-Fencing-Token
upstreams:
  - name: web
    backends: [{address: "b1:8080"}, {address: "b2:8080"}]
`, agent, name, e.vip)
	if err := os.WriteFile(filepath.Join(dir, "kelpie.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// --user 0:0: Docker gives a non-root user no ambient capabilities, so
	// the image's UID 65532 would not get NET_ADMIN from --cap-add.
	k := &haKelpie{id: "kelpie-" + name, alias: "kelpie-" + name}
	k.c = Run(t, "kelpie-test-ha"+name, "--network", e.net, "--network-alias", k.alias,
		"--cap-add", "NET_ADMIN", "--user", "0:0",
		"-p", "127.0.0.1::9901", "-v", dir+":/etc/kelpie:ro", "-e", "KELPIE_ADMIN_TOKEN="+e.token,
		e.img.Kelpie, "run")
	e.kelpies[name] = k
	t.Cleanup(func() { // before the removal: Run keeps only the last lines
		if t.Failed() {
			out, _ := exec.Command("docker", "logs", k.c.ID).CombinedOutput()
			t.Logf("all logs of kelpie-%s:\n%s", name, out)
		}
	})
	e.attach(k)
}

// attach re-reads k's admin port and starts a sampler in its (current)
// network namespace; needed again after the container restarts.
func (e *haEnv) attach(k *haKelpie) {
	t := e.t
	k.admin = "http://" + k.c.HostPort(t, "9901/tcp")
	if k.sampler != nil {
		remove("rm", "-f", "-v", k.sampler.ID)
	}
	k.sampler = Run(t, "kelpie-test-hasampler", "--network", "container:"+k.c.ID, e.sampler,
		"-vip", e.vip, "http://127.0.0.1:9901/api/v1/ha")
}

func (e *haEnv) getJSON(url string, v any) bool {
	resp, err := haClient.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(v) == nil
}

// haStatus is the part of GET /api/v1/ha the suite looks at.
type haStatus struct {
	Role  string    `json:"role"`
	ID    string    `json:"id"`
	Token uint64    `json:"fencing_token"`
	Since time.Time `json:"since"`
	VIP   struct {
		Held bool `json:"held"`
	} `json:"vip"`
}

// ha returns kelpie <name>'s HA status through its published admin port;
// the zero value when it does not answer.
func (e *haEnv) ha(name string) haStatus {
	var s haStatus
	e.getJSON(e.kelpies[name].admin+"/api/v1/ha", &s)
	return s
}

// raftLeader returns the address ("IP:8300") of Consul's Raft leader, ""
// if there is none.
func (e *haEnv) raftLeader() string {
	var l string
	e.getJSON(e.consul+"/v1/status/leader", &l)
	return l
}

// hasSession reports whether Consul has an HA session of kelpie id.
func (e *haEnv) hasSession(id string) bool {
	var ss []struct{ Name string }
	if !e.getJSON(e.consul+"/v1/session/list", &ss) {
		return false
	}
	for _, s := range ss {
		if s.Name == "kelpie-ha "+id {
			return true
		}
	}
	return false
}

// samples returns everything c's sampler has printed so far.
func (e *haEnv) samples(c *Container) []haSample {
	e.t.Helper()
	out, err := Docker("logs", c.ID)
	if err != nil {
		e.t.Fatalf("logs of %s: %v", c.Name, err)
	}
	var ss []haSample
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var s haSample
		if json.Unmarshal(sc.Bytes(), &s) == nil {
			ss = append(ss, s)
		}
	}
	return ss
}

// overlap counts the samples, from a's and b's samplers after since,
// taken while the other instance's latest earlier sample said the same:
// both interfaces holding the VIP (what the network sees), both kelpies
// leading by their own /api/v1/ha, and both saying vip.held.
type overlap struct{ kernel, leaders, held, total int }

func (e *haEnv) overlaps(since time.Time) overlap {
	var o overlap
	a, b := e.samples(e.kelpies["a"].sampler), e.samples(e.kelpies["b"].sampler)
	count := func(xs, ys []haSample) {
		j := -1
		for _, x := range xs {
			if x.at().Before(since) {
				continue
			}
			o.total++
			for j+1 < len(ys) && ys[j+1].T <= x.T {
				j++
			}
			if j < 0 {
				continue
			}
			y := ys[j]
			if x.VIP && y.VIP {
				o.kernel++
			}
			if len(x.R) > 0 && len(y.R) > 0 {
				if x.R[0].Role == "leader" && y.R[0].Role == "leader" {
					o.leaders++
				}
				if x.R[0].Held && y.R[0].Held {
					o.held++
				}
			}
		}
	}
	count(a, b)
	count(b, a)
	return o
}

// leaderAndStandby returns the names of the leading and the standby kelpie.
func (e *haEnv) leaderAndStandby() (string, string) {
	e.t.Helper()
	var l, s string
	testkit.Eventually(e.t, 30*time.Second, "one kelpie leads, the other stands by", func() bool {
		ra, rb := e.ha("a").Role, e.ha("b").Role
		switch {
		case ra == "leader" && rb == "standby":
			l, s = "a", "b"
		case rb == "leader" && ra == "standby":
			l, s = "b", "a"
		default:
			return false
		}
		return true
	})
	return l, s
}

// servedAt returns when the client first got a proxied 200 at the VIP from
// kelpie id, after since.
func (e *haEnv) servedAt(since time.Time, id string) (time.Time, bool) {
	for _, s := range e.samples(e.client) {
		if !s.at().Before(since) && s.R[0].Code == 200 && s.R[1].ID == id {
			return s.at(), true
		}
	}
	return time.Time{}, false
}

func (e *haEnv) post(url string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := haClient.Do(req)
	if err != nil {
		e.t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("POST %s: %s %s", url, resp.Status, b)
	}
}

// adminState returns b1's admin state at kelpie <name>, "" if it does not
// answer.
func (e *haEnv) adminState(name, backend string) string {
	var v struct {
		Upstreams []struct {
			Backends []struct {
				Address string `json:"address"`
				Admin   string `json:"admin"`
			} `json:"backends"`
		} `json:"upstreams"`
	}
	if !e.getJSON(e.kelpies[name].admin+"/api/v1/upstreams", &v) {
		return ""
	}
	for _, u := range v.Upstreams {
		for _, b := range u.Backends {
			if b.Address == backend {
				return b.Admin
			}
		}
	}
	return ""
}
