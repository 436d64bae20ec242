package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ErrNeedNetAdmin is returned when kelpie may not change the interface's
// addresses: it runs without CAP_NET_ADMIN.
var ErrNeedNetAdmin = errors.New("managing a virtual IP needs CAP_NET_ADMIN (kelpie's image: docker run --user 0:0 --cap-add NET_ADMIN; systemd AmbientCapabilities=CAP_NET_ADMIN)")

// ErrVIPNotInSubnet is returned by CheckVIP for an address that no subnet
// of the interface contains: nobody on that link would ARP for it.
var ErrVIPNotInSubnet = errors.New("not inside any subnet of the interface")

// ErrNoInterface is returned when the VIP's interface does not exist (for
// instance after docker network disconnect removed the container's eth0).
// An interface that does not exist holds no address.
var ErrNoInterface = errors.New("no such network interface")

// interfaceByName is net.InterfaceByName with a missing interface reported
// as ErrNoInterface.
func interfaceByName(name string) (*net.Interface, error) {
	ifc, err := net.InterfaceByName(name)
	var op *net.OpError
	if err != nil && errors.As(err, &op) && op.Err != nil && op.Err.Error() == ErrNoInterface.Error() {
		return nil, fmt.Errorf("interface %q: %w", name, ErrNoInterface)
	}
	return ifc, err
}

// VIP is a virtual IPv4 address the leader holds on one interface. It is
// added as a /32, like keepalived's virtual_ipaddress, so that holding it
// changes no route.
type VIP struct {
	Addr      netip.Addr
	Interface string
}

func (v VIP) String() string { return v.Addr.String() + " on " + v.Interface }

// CheckVIP checks that iface exists and that one of its subnets contains
// addr (the interface's own primary address, not a /32 VIP).
func CheckVIP(addr netip.Addr, iface string) error {
	if !addr.Is4() {
		return fmt.Errorf("vip %s: only IPv4 addresses are supported (gratuitous ARP)", addr)
	}
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("vip %s: interface %q: %w", addr, iface, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return fmt.Errorf("vip %s: addresses of %s: %w", addr, iface, err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		p, err := netip.ParsePrefix(n.String())
		if err != nil || p.Bits() == p.Addr().BitLen() {
			continue // a /32 (maybe this very VIP) says nothing about the link
		}
		if p.Masked().Contains(addr) {
			return nil
		}
	}
	return fmt.Errorf("vip %s: interface %s: %w", addr, iface, ErrVIPNotInSubnet)
}

// Holds reports whether the interface carries addr now. An interface that
// does not exist holds nothing: false, nil.
func (v VIP) Holds() (bool, error) {
	ifc, err := interfaceByName(v.Interface)
	if errors.Is(err, ErrNoInterface) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("vip %s: %w", v, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return false, fmt.Errorf("vip %s: %w", v, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == v.Addr {
				return true, nil
			}
		}
	}
	return false, nil
}
