package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Host is another host for fault tests: a network namespace of its own,
// joined to the test's namespace by a veth pair on a /30, so that what
// reaches it crosses a link whose packets nftables in that namespace can
// drop (this kernel has no netem). Servers started with Listen run in the
// test process but their sockets live in the namespace.
//
// NewHost needs root. Everything it creates (the namespace, whose deletion
// takes the veth pair and the nft table with it) is uniquely named
// kelpie-t-PID-N and removed when the test ends, also when it fails; a
// namespace left by a test process that was killed is removed by the next
// NewHost.
type Host struct {
	// Name is the namespace's name (ip netns list).
	Name string
	// IP is the host's address, reachable from the test's namespace.
	IP string
	// Link is the name of the veth end in the test's namespace.
	Link string
}

const hostPrefix = "kelpie-t-"

var hostSeq atomic.Int32

// NewHost creates a Host, Missing (a skip under -short, a failure
// otherwise) when the test does not run as root or ip(8) or nft(8) is
// absent.
func NewHost(t testing.TB) *Host {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (CAP_SYS_ADMIN and CAP_NET_ADMIN) for a network namespace", "run the tests as root, as CI does, or in a container with --privileged")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(t, tool+"(8) for the test hosts' network namespaces", "apt-get install -y iproute2 nftables, or tools/deps.sh")
		}
	}
	sweepHosts()
	n := int(hostSeq.Add(1))
	h := &Host{Name: fmt.Sprintf("%s%d-%d", hostPrefix, os.Getpid(), n)}
	// A /30 in 10.251.0.0/16 per host; skip any a concurrent process holds.
	base := (os.Getpid()*8 + n) % 16384
	for i := 0; ; i++ {
		if i == 16384 {
			t.Fatal("new host: no free /30 in 10.251.0.0/16")
		}
		k := (base + i) % 16384
		gw := fmt.Sprintf("10.251.%d.%d", k/64, k%64*4+1)
		if out, _ := exec.Command("ip", "-4", "-o", "addr", "show", "to", gw+"/30").Output(); len(out) == 0 {
			h.IP = fmt.Sprintf("10.251.%d.%d", k/64, k%64*4+2)
			h.Link = fmt.Sprintf("kt%dx%d", os.Getpid()%1000000, n%100)
			h.run(t, "ip", "netns", "add", h.Name)
			t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", h.Name).Run() })
			h.run(t, "ip", "link", "add", h.Link, "type", "veth", "peer", "name", "eth0", "netns", h.Name)
			t.Cleanup(func() { _ = exec.Command("ip", "link", "del", h.Link).Run() }) // gone with the namespace, unless that failed
			h.run(t, "ip", "addr", "add", gw+"/30", "dev", h.Link)
			h.run(t, "ip", "link", "set", h.Link, "up")
			h.run(t, "ip", "-n", h.Name, "addr", "add", h.IP+"/30", "dev", "eth0")
			h.run(t, "ip", "-n", h.Name, "link", "set", "eth0", "up")
			h.run(t, "ip", "-n", h.Name, "link", "set", "lo", "up")
			h.nft(t, "add table inet kelpie")
			h.nft(t, "add chain inet kelpie in { type filter hook input priority 0; }")
			h.nft(t, "add chain inet kelpie out { type filter hook output priority 0; }")
			return h
		}
	}
}

// sweepHosts removes namespaces NewHost made in test processes that no
// longer run (killed before their cleanup).
func sweepHosts() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		pid, _, ok := strings.Cut(strings.TrimPrefix(name, hostPrefix), "-")
		if !ok || !strings.HasPrefix(name, hostPrefix) {
			continue
		}
		if p, err := strconv.Atoi(pid); err == nil && syscall.Kill(p, 0) == syscall.ESRCH {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

func (h *Host) run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("host %s: %s %s: %v\n%s", h.Name, name, strings.Join(args, " "), err, out)
	}
}

func (h *Host) nft(t testing.TB, rule string) {
	t.Helper()
	h.run(t, "ip", "netns", "exec", h.Name, "nft", rule)
}

// Drop makes the link lose percent of the packets that reach the host
// (in) or leave it (out): 100 on both is a black hole, 20 on in is 20 %
// loss towards it, 0 and 0 a clean link again.
func (h *Host) Drop(t testing.TB, in, out int) {
	t.Helper()
	for _, c := range []struct {
		chain   string
		percent int
	}{{"in", in}, {"out", out}} {
		h.nft(t, "flush chain inet kelpie "+c.chain)
		switch {
		case c.percent >= 100:
			h.nft(t, "add rule inet kelpie "+c.chain+" drop")
		case c.percent > 0:
			h.nft(t, fmt.Sprintf("add rule inet kelpie %s numgen random mod 100 < %d drop", c.chain, c.percent))
		}
	}
}

// Listen opens a TCP listener on a port the kernel picks at the host's
// address, from a thread that enters the namespace and is thrown away
// afterwards, so no other goroutine ever runs there.
func (h *Host) Listen(t testing.TB) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/run/netns/" + h.Name)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		ln, err := net.Listen("tcp4", net.JoinHostPort(h.IP, "0"))
		done <- result{ln, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("host %s: listen: %v", h.Name, r.err)
	}
	return r.ln
}
