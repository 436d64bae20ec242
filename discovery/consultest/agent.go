// Package consultest runs a real Consul agent (consul agent -dev) for
// tests, on free loopback ports, and stops it by PID when the test ends.
//
// The binary comes from $KELPIE_CONSUL_BIN, else from the path
// tools/consul/build.sh builds to. When it is missing the test fails and
// says how to build it; only go test -short skips it instead
// (testkit.ConsulBinary).
package consultest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// Version is the Consul release tools/consul pins.
const Version = testkit.ConsulVersion

// startTimeout bounds how long an agent may take to elect itself leader.
const startTimeout = 30 * time.Second

// Binary returns the consul binary's path: $KELPIE_CONSUL_BIN, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/kelpie/bin/consul-<Version>. When the file
// is missing it fails t, or skips t under -short.
func Binary(t testing.TB) string {
	t.Helper()
	return testkit.ConsulBinary(t)
}

// Agent is one consul agent -dev process: a single-node server, data in
// memory, gossip on loopback, DNS, gRPC and Connect off.
type Agent struct {
	// HTTPAddr is the HTTP API's "127.0.0.1:port"; it stays the same
	// across Restart.
	HTTPAddr string
	// Client talks to the agent.
	Client *api.Client

	t       testing.TB
	bin     string
	ports   [4]int // http, serf lan, serf wan, server
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	runs    int
}

// Start starts an agent and waits until it has elected itself leader and
// registered its node. The agent is killed when the test ends.
func Start(t testing.TB) *Agent {
	t.Helper()
	a := &Agent{t: t, bin: Binary(t), dir: t.TempDir()}
	copy(a.ports[:], testkit.FreePorts(t, len(a.ports)))
	a.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports[0]))
	cfg := api.DefaultConfig()
	cfg.Address = a.HTTPAddr
	cfg.Token = ""
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Client = client
	t.Cleanup(a.Kill)
	a.start()
	return a
}

func (a *Agent) start() {
	t := a.t
	t.Helper()
	a.runs++
	a.logPath = filepath.Join(a.dir, fmt.Sprintf("consul-%d.log", a.runs))
	logf, err := os.Create(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p := func(i int) string { return strconv.Itoa(a.ports[i]) }
	a.cmd = exec.Command(a.bin, "agent", "-dev",
		"-node", "kelpie-test",
		"-bind", "127.0.0.1", "-client", "127.0.0.1", "-advertise", "127.0.0.1",
		"-data-dir", filepath.Join(a.dir, fmt.Sprintf("data-%d", a.runs)),
		"-http-port", p(0), "-serf-lan-port", p(1), "-serf-wan-port", p(2), "-server-port", p(3),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-log-level", "warn",
		"-hcl", "connect { enabled = false }",
		"-hcl", "disable_update_check = true",
	)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start consul: %v", err)
	}
	exited := make(chan struct{})
	a.exited = exited
	cmd := a.cmd
	go func() { cmd.Wait(); close(exited) }()

	// Poll: the agent has no readiness event to wait on.
	deadline := time.Now().Add(startTimeout)
	for {
		leader, err := a.Client.Status().Leader()
		if err == nil && leader != "" {
			if n, _, err := a.Client.Catalog().Node("kelpie-test", nil); err == nil && n != nil {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("consul agent exited during start:\n%s", a.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul agent not ready after %v (last error %v):\n%s", startTimeout, err, a.Log())
		}
	}
}

// Log returns what the current agent process printed.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.logPath)
	return string(b)
}

// PID is the running agent's process id.
func (a *Agent) PID() int { return a.cmd.Process.Pid }

// Pause stops the agent with SIGSTOP: its sockets stay open but nothing
// answers, like a hung agent.
func (a *Agent) Pause() { a.signal(syscall.SIGSTOP) }

// Resume continues a paused agent (SIGCONT).
func (a *Agent) Resume() { a.signal(syscall.SIGCONT) }

func (a *Agent) signal(sig syscall.Signal) {
	a.t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		a.t.Fatalf("signal consul %d: %v", a.PID(), err)
	}
}

// Kill kills the agent by PID (SIGKILL, which also ends a paused one) and
// waits for it to exit. Killing a dead agent does nothing.
func (a *Agent) Kill() {
	if a.cmd == nil {
		return
	}
	select {
	case <-a.exited:
		return
	default:
	}
	if err := a.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		a.t.Errorf("kill consul %d: %v", a.PID(), err)
	}
	<-a.exited
}

// Restart kills the agent if it runs and starts a fresh one on the same
// ports. Dev agents keep nothing: registrations are gone and the Raft
// index starts over (it goes backwards for watchers).
func (a *Agent) Restart() {
	a.t.Helper()
	a.Kill()
	a.start()
}

// Register registers a service instance on the agent with a TTL check in
// the given status (api.HealthPassing, HealthWarning, HealthCritical).
// addr may be empty (watchers then use the node's address, 127.0.0.1).
func (a *Agent) Register(id, name, addr string, port int, tags []string, weights *api.AgentWeights, status string) {
	a.t.Helper()
	err := a.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: name, Address: addr, Port: port, Tags: tags, Weights: weights,
		Check: &api.AgentServiceCheck{TTL: "10m", Status: status},
	})
	if err != nil {
		a.t.Fatalf("register %s: %v", id, err)
	}
}

// SetStatus sets the TTL check of instance id to status.
func (a *Agent) SetStatus(id, status string) {
	a.t.Helper()
	if err := a.Client.Agent().UpdateTTL("service:"+id, "set by test", status); err != nil {
		a.t.Fatalf("set %s %s: %v", id, status, err)
	}
}

// Deregister removes instance id.
func (a *Agent) Deregister(id string) {
	a.t.Helper()
	if err := a.Client.Agent().ServiceDeregister(id); err != nil {
		a.t.Fatalf("deregister %s: %v", id, err)
	}
}
