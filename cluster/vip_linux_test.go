package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

var netnsSeq atomic.Int32

// netns creates a uniquely named network namespace with a veth pair
// v0 (10.77.0.1/24) <-> v1 (10.77.0.2/24), removed when the test ends,
// and returns its name.
func netns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testkit.Missing(t, "root (CAP_SYS_ADMIN and CAP_NET_ADMIN) for a network namespace", "run the tests as root, or in a container with --privileged")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testkit.Missing(t, "ip(8) to build the test network namespace", "apt-get install -y iproute2")
	}
	name := fmt.Sprintf("kelpie-ha-%d-%d", os.Getpid(), netnsSeq.Add(1))
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ip("-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ip("-n", name, "addr", "add", "10.77.0.1/24", "dev", "v0")
	ip("-n", name, "addr", "add", "10.77.0.2/24", "dev", "v1")
	ip("-n", name, "link", "set", "v0", "up")
	ip("-n", name, "link", "set", "v1", "up")
	return name
}

// inNetns runs fn on a thread that has entered the namespace. The thread
// stays locked and is thrown away afterwards, so no other goroutine ever
// runs in the namespace.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	done := make(chan any)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		defer func() { done <- recover() }()
		f, err := os.Open("/run/netns/" + name)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(err)
		}
		fn()
	}()
	if p := <-done; p != nil {
		t.Fatal(p)
	}
}

func TestVIPAddAnnounceRemove(t *testing.T) {
	ns := netns(t)
	vip := VIP{Addr: netip.MustParseAddr("10.77.0.100"), Interface: "v0"}
	inNetns(t, ns, func() {
		if err := CheckVIP(vip.Addr, "v0"); err != nil {
			t.Errorf("check: %v", err)
		}
		if err := CheckVIP(netip.MustParseAddr("10.88.0.1"), "v0"); !errors.Is(err, ErrVIPNotInSubnet) {
			t.Errorf("outside the subnet: %v", err)
		}
		if err := CheckVIP(vip.Addr, "nope0"); err == nil {
			t.Error("a missing interface passed the check")
		}

		// Listen for ARP on the peer end.
		v1, err := net.InterfaceByName("v1")
		if err != nil {
			panic(err)
		}
		v0, _ := net.InterfaceByName("v0")
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			panic(err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: v1.Index}); err != nil {
			panic(err)
		}
		tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

		if err := vip.Add(2); err != nil {
			t.Fatalf("add: %v", err)
		}
		if held, err := vip.Holds(); !held || err != nil {
			t.Errorf("after add: holds %v, %v", held, err)
		}
		garps := 0
		buf := make([]byte, 128)
		for garps < 2 {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatalf("gratuitous ARP: got %d, then %v", garps, err)
			}
			p := buf[:n]
			if n >= 28 && p[7] == 1 && net.HardwareAddr(p[8:14]).String() == v0.HardwareAddr.String() &&
				netip.AddrFrom4([4]byte(p[14:18])) == vip.Addr && netip.AddrFrom4([4]byte(p[24:28])) == vip.Addr {
				garps++
			}
		}
		if err := vip.Add(1); err != nil {
			t.Errorf("second add: %v", err)
		}
		if err := vip.Remove(); err != nil {
			t.Fatalf("remove: %v", err)
		}
		if held, err := vip.Holds(); held || err != nil {
			t.Errorf("after remove: holds %v, %v", held, err)
		}
		if err := vip.Remove(); err != nil {
			t.Errorf("second remove: %v", err)
		}
	})
}

func TestVIPWithoutNetAdmin(t *testing.T) {
	ns := netns(t)
	vip := VIP{Addr: netip.MustParseAddr("10.77.0.100"), Interface: "v0"}
	inNetns(t, ns, func() {
		// Capabilities are per thread: drop CAP_NET_ADMIN on this one only.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			panic(err)
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			panic(err)
		}
		for name, err := range map[string]error{"remove": vip.Remove(), "add": vip.Add(1)} {
			if !errors.Is(err, ErrNeedNetAdmin) {
				t.Errorf("%s without CAP_NET_ADMIN: %v", name, err)
			} else {
				t.Logf("%s: %v", name, err)
			}
		}
	})
}
