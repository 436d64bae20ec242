package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Add puts the address on the interface (already there is fine) and
// announces it with gratuitous ARP: GARPs gratuitous ARP requests, 100ms
// apart (keepalived sends 5).
func (v VIP) Add(garps int) error {
	ifc, err := interfaceByName(v.Interface)
	if err != nil {
		return fmt.Errorf("vip %s: %w", v, err)
	}
	if err := v.addr(unix.RTM_NEWADDR, ifc.Index); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	for i := range garps {
		if i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if err := v.garp(ifc); err != nil {
			return err
		}
	}
	return nil
}

// Remove takes the address off the interface (already gone is fine). A
// missing interface is ErrNoInterface: the address is not held either. It
// is also how kelpie checks at start that it may manage the VIP.
func (v VIP) Remove() error {
	ifc, err := interfaceByName(v.Interface)
	if err != nil {
		return fmt.Errorf("vip %s: %w", v, err)
	}
	if err := v.addr(unix.RTM_DELADDR, ifc.Index); errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("vip %s: %w: %w", v, ErrNoInterface, err) // gone since the lookup
	} else if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return err
	}
	return nil
}

// addr sends one RTM_NEWADDR/RTM_DELADDR for v.Addr/32 and waits for the
// kernel's acknowledgement.
func (v VIP) addr(op uint16, index int) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("vip %s: netlink socket: %w", v, err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("vip %s: netlink bind: %w", v, err)
	}
	ip := v.Addr.As4()
	attr := func(typ uint16, data []byte) []byte {
		b := make([]byte, 4, 8)
		binary.NativeEndian.PutUint16(b[0:], uint16(4+len(data)))
		binary.NativeEndian.PutUint16(b[2:], typ)
		return append(b, data...) // 4-byte data: already aligned
	}
	ifa := make([]byte, unix.SizeofIfAddrmsg)
	ifa[0] = unix.AF_INET
	ifa[1] = 32 // prefix length
	ifa[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(ifa[4:], uint32(index))
	body := append(ifa, attr(unix.IFA_LOCAL, ip[:])...)
	body = append(body, attr(unix.IFA_ADDRESS, ip[:])...)

	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK)
	if op == unix.RTM_NEWADDR {
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	}
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], op)
	binary.NativeEndian.PutUint16(msg[6:], flags)
	binary.NativeEndian.PutUint32(msg[8:], 1) // seq
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return v.opError(op, err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return v.opError(op, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return v.opError(op, err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return v.opError(op, unix.Errno(-code))
			}
			return nil
		}
	}
}

func (v VIP) opError(op uint16, err error) error {
	verb := "add"
	if op == unix.RTM_DELADDR {
		verb = "remove"
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("vip %s: %s: %w: %w", v, verb, needNetAdminHere(), err)
	}
	return fmt.Errorf("vip %s: %s: %w", v, verb, os.NewSyscallError("netlink", err))
}

// needNetAdminHere is needNetAdmin for this process.
func needNetAdminHere() error {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ErrNeedNetAdmin
	}
	return needNetAdmin(os.Geteuid(), string(status))
}

// garp broadcasts one gratuitous ARP request for v.Addr from ifc's MAC
// address, so that neighbours' caches point at this machine at once.
func (v VIP) garp(ifc *net.Interface) error {
	if len(ifc.HardwareAddr) != 6 {
		return nil // no Ethernet address (loopback, tun): nothing to announce
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("vip %s: gratuitous arp: %w: %w", v, needNetAdminHere(), err)
		}
		return fmt.Errorf("vip %s: gratuitous arp socket: %w", v, err)
	}
	defer unix.Close(fd)
	ip := v.Addr.As4()
	pkt := make([]byte, 0, 28)
	pkt = binary.BigEndian.AppendUint16(pkt, 1)      // Ethernet
	pkt = binary.BigEndian.AppendUint16(pkt, 0x0800) // IPv4
	pkt = append(pkt, 6, 4)
	pkt = binary.BigEndian.AppendUint16(pkt, 1) // request
	pkt = append(pkt, ifc.HardwareAddr...)
	pkt = append(pkt, ip[:]...)
	pkt = append(pkt, 0, 0, 0, 0, 0, 0)
	pkt = append(pkt, ip[:]...)
	to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifc.Index, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(fd, pkt, 0, to); err != nil {
		return fmt.Errorf("vip %s: gratuitous arp: %w", v, err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
