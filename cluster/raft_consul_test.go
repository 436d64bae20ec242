package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/discovery/consultest"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// consulProc is one consul agent process of a multi-server cluster on
// loopback.
type consulProc struct {
	name   string
	http   string
	serf   int
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

func (p *consulProc) kill(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.exited
}

func (p *consulProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}

// raftCluster starts three Consul servers (Raft, raft_multiplier 1) and
// one client agent, all on loopback, killed by PID when the test ends.
// kelpie talks to the client agent, as on a real node.
func raftCluster(t *testing.T) (servers []*consulProc, client *consulProc) {
	t.Helper()
	bin := consultest.Binary(t)
	dir := t.TempDir()
	start := func(name string, server bool, join []int) *consulProc {
		ps := testkit.FreePorts(t, 4)
		httpPort, serf, wan, rpc := ps[0], ps[1], ps[2], ps[3]
		p := &consulProc{name: name, http: "127.0.0.1:" + strconv.Itoa(httpPort), serf: serf, exited: make(chan struct{}),
			log: filepath.Join(dir, name+".log")}
		args := []string{"agent", "-node", name, "-data-dir", filepath.Join(dir, name),
			"-bind", "127.0.0.1", "-client", "127.0.0.1", "-advertise", "127.0.0.1",
			"-http-port", strconv.Itoa(httpPort), "-serf-lan-port", strconv.Itoa(serf), "-serf-wan-port", strconv.Itoa(wan),
			"-server-port", strconv.Itoa(rpc), "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
			"-log-level", "warn", "-hcl", "disable_update_check = true", "-hcl", "performance { raft_multiplier = 1 }",
			"-hcl", "connect { enabled = false }"}
		if server {
			args = append(args, "-server", "-bootstrap-expect", "3")
		}
		for _, j := range join {
			args = append(args, "-retry-join", "127.0.0.1:"+strconv.Itoa(j), "-retry-interval", "200ms")
		}
		f, err := os.Create(p.log)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p.cmd = exec.Command(bin, args...)
		p.cmd.Stdout, p.cmd.Stderr = f, f
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.cmd.Wait(); close(p.exited) }()
		t.Cleanup(func() { p.kill(t) })
		return p
	}
	s1 := start("srv1", true, nil)
	s2 := start("srv2", true, []int{s1.serf})
	s3 := start("srv3", true, []int{s1.serf})
	c := start("client", false, []int{s1.serf, s2.serf, s3.serf})
	servers = []*consulProc{s1, s2, s3}

	cl := clientAt(t, c.http)
	deadline := time.Now().Add(60 * time.Second)
	for {
		leader, err := cl.Status().Leader()
		peers, _ := cl.Status().Peers()
		if err == nil && leader != "" && len(peers) == 3 {
			if n, _, err := cl.Catalog().Node("client", nil); err == nil && n != nil {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(s1.log)
			t.Fatalf("consul cluster not ready: leader %q err %v\n%s", leader, err, b)
		}
		time.Sleep(100 * time.Millisecond) // no readiness event to wait on
	}
	return servers, c
}

// raftLeader returns the server process that leads Raft now.
func raftLeader(t *testing.T, servers []*consulProc) *consulProc {
	t.Helper()
	for _, s := range servers {
		cl := clientAt(t, s.http)
		self, err := cl.Agent().Self()
		if err != nil {
			continue
		}
		leader, err := cl.Status().Leader()
		if err != nil {
			continue
		}
		member := self["Member"]
		if port, ok := member["Tags"].(map[string]any)["port"]; ok && leader == fmt.Sprintf("127.0.0.1:%v", port) {
			return s
		}
	}
	t.Fatal("no raft leader found")
	return nil
}

func TestHAConsulServerLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: a 3-server Consul cluster takes tens of seconds")
	}
	servers, client := raftCluster(t)
	agent := &consultest.Agent{HTTPAddr: client.http}
	// A 3s check TTL: this test is about Consul's leader, not about a CPU
	// starved test machine delaying the heartbeats (that fences, safely).
	slack := func(o *ElectorOptions) { o.CheckTTL = 3 * time.Second }
	a := startMember(t, agent, "kelpie-a", "kelpie/test/leader", slack)
	b := startMember(t, agent, "kelpie-b", "kelpie/test/leader", slack)
	leader, _ := leaderOf(t, a, b)
	before := leader.el.Status()

	victim := raftLeader(t, servers)
	killed := time.Now()
	victim.kill(t)
	// Wait for a new Raft leader, then 2 more session renewals' worth.
	cl := clientAt(t, client.http)
	for {
		if l, err := cl.Status().Leader(); err == nil && l != "" && !(time.Since(killed) < time.Second) {
			break
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatal("no new raft leader")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("new raft leader after %v", time.Since(killed))
	time.Sleep(DefaultSessionTTL) // a whole session TTL: the lease must hold through it
	after := leader.el.Status()
	if after.Role != RoleLeader || after.FencingToken != before.FencingToken || !after.Since.Equal(before.Since) {
		t.Errorf("kelpie leadership changed when the consul leader died: before %+v, after %+v", before, after)
	}
	noOverlap(t, a, b)
	for _, m := range []*member{a, b} {
		m.mu.Lock()
		n := len(m.history)
		m.mu.Unlock()
		if m == leader && n != 1 || m != leader && n > 2 {
			t.Errorf("%s changed %d times: %+v", m.id, n, m.history)
		}
	}
}

// TestHAConsulQuorumLost pauses two of three servers: nobody can renew a
// session, so the leader fences itself (on_consul_loss fence) once its
// session's TTL could have run out, and the standby never leads. With the
// quorum back, the same session still holds the lock, and the leader
// resumes with the same fencing token.
func TestHAConsulQuorumLost(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: a 3-server Consul cluster takes tens of seconds")
	}
	servers, client := raftCluster(t)
	agent := &consultest.Agent{HTTPAddr: client.http}
	a := startMember(t, agent, "kelpie-a", "kelpie/test/leader", nil)
	b := startMember(t, agent, "kelpie-b", "kelpie/test/leader", nil)
	leader, standby := leaderOf(t, a, b)
	token := leader.el.Status().FencingToken

	lost := time.Now()
	servers[0].signal(t, syscall.SIGSTOP)
	servers[1].signal(t, syscall.SIGSTOP)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			servers[0].signal(t, syscall.SIGCONT)
			servers[1].signal(t, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	fenced := leader.waitRole(t, RoleFenced, DefaultSessionTTL+5*time.Second)
	t.Logf("quorum lost at 0: leader fenced after %v", fenced.Sub(lost))
	if d := fenced.Sub(lost); d > DefaultSessionTTL {
		t.Errorf("fenced %v after the quorum loss, later than one session TTL", d)
	}
	if st := standby.el.Status(); st.Role != RoleStandby {
		t.Errorf("standby without quorum: %+v", st)
	}
	back := time.Now()
	resume()
	leader.waitRoleAfter(t, RoleLeader, fenced, 30*time.Second)
	t.Logf("quorum back at 0: leader again after %v", time.Since(back))
	if st := leader.el.Status(); st.FencingToken != token {
		t.Errorf("resumed with token %d, had %d", st.FencingToken, token)
	}
	noOverlap(t, a, b)
}
