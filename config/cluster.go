package config

import (
	"errors"
	"net/netip"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kelpie-lb/kelpie/cluster"
)

// Cluster makes this instance part of a named fleet in Consul.
type Cluster struct {
	// Name of the cluster: the Consul tag of its instances and the KV
	// prefix kelpie/<name>/ of its fleet drains and lock. Required.
	Name string `yaml:"name"`
	// Register registers this instance in Consul as service "kelpie" with
	// its /readyz as the HTTP check; deregistered on clean shutdown.
	// Default false.
	Register bool `yaml:"register"`
	// ID is this instance's unique ID. Default kelpie-<name>-<hostname>-<admin port>.
	ID string `yaml:"id"`
	// Advertise is the proxy "host:port" registered in Consul, and the host
	// its /readyz check is polled on. Default: listen (an unspecified host
	// lets Consul use the node's address; the check then uses admin.listen).
	Advertise string `yaml:"advertise"`
}

// HA is the active-passive group: one leader at a time, through a Consul
// lock.
type HA struct {
	// Enabled turns the group on. Default false.
	Enabled bool `yaml:"enabled"`
	// LockKey is the lock's KV key. Default kelpie/<cluster.name>/leader.
	LockKey string `yaml:"lock_key"`
	// SessionTTL of the lock's session, 10s..24h. Default 10s.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// LockDelay, 1ms..60s: after a leader's session dies, nobody can take
	// the lock for this long. Default 1s.
	LockDelay time.Duration `yaml:"lock_delay"`
	// CheckTTL of the session's own heartbeat check: a killed leader loses
	// the lock this long after its last heartbeat. Default 1.5s.
	CheckTTL time.Duration `yaml:"check_ttl"`
	// VIP, if set, is added by the leader and removed when it stops leading.
	VIP *VIPConfig `yaml:"vip"`
	// Preempt lets an instance with a higher priority take the lock back
	// from a leader with a lower one. Default false (manual failback).
	Preempt bool `yaml:"preempt"`
	// Priority of this instance for preemption. Default 100.
	Priority *int `yaml:"priority"`
	// OnConsulLoss is what a leader does when it cannot confirm its lock in
	// time: fence (drop the VIP, go unready; default) or keep (keep the VIP
	// and serving, go unready).
	OnConsulLoss string `yaml:"on_consul_loss"`
	// FencingHeader, if set, is a request header carrying the leader's
	// fencing token to backends, e.g. X-Kelpie-Fencing-Token. A client-sent
	// header of that name is removed. Default: none.
	FencingHeader string `yaml:"fencing_header"`
}

// VIPConfig is the virtual IP of an HA group.
type VIPConfig struct {
	// Address is an IPv4 address inside a subnet of Interface. Required.
	Address string `yaml:"address"`
	// Interface it is added to, e.g. eth0. Required.
	Interface string `yaml:"interface"`
}

func clusterDefaults(c *Config) {
	if c.HA == nil || c.Cluster == nil {
		return
	}
	h := c.HA
	orDefault(&h.LockKey, "kelpie/"+c.Cluster.Name+"/leader")
	orDefault(&h.SessionTTL, cluster.DefaultSessionTTL)
	orDefault(&h.LockDelay, cluster.DefaultLockDelay)
	orDefault(&h.CheckTTL, cluster.DefaultCheckTTL)
	orDefault(&h.OnConsulLoss, cluster.OnConsulLossFence)
	if h.Priority == nil {
		h.Priority = ptr(cluster.DefaultPriority)
	}
}

// cluster validates the cluster: and ha: blocks.
func (v *validator) cluster(c *Config) {
	if c.Cluster != nil {
		if !hasKey(v.root, "consul") {
			v.errf(at("cluster"), "cluster needs a consul: block (the fleet is coordinated through Consul)")
		}
		if c.Cluster.Name == "" {
			v.errf(at("cluster"), "cluster.name is required")
		} else if !validName(c.Cluster.Name) {
			v.errf(at("cluster", "name"), "cluster.name %q: use letters, digits, '-' and '_' only", c.Cluster.Name)
		}
		if c.Cluster.Advertise != "" {
			v.hostPort(at("cluster", "advertise"), "cluster.advertise", c.Cluster.Advertise)
		}
	}
	h := c.HA
	if h == nil || !h.Enabled {
		return
	}
	if !hasKey(v.root, "consul") {
		v.errf(at("ha"), "ha needs a consul: block (the lock lives in Consul)")
	}
	if c.Cluster == nil {
		v.errf(at("ha"), "ha needs a cluster: block with a name")
		return
	}
	if h.SessionTTL < 10*time.Second || h.SessionTTL > 24*time.Hour {
		v.errf(at("ha", "session_ttl"), "ha.session_ttl %s: Consul accepts 10s to 24h", h.SessionTTL)
	}
	if h.LockDelay < time.Millisecond || h.LockDelay > time.Minute {
		v.errf(at("ha", "lock_delay"), "ha.lock_delay %s: Consul accepts 1ms to 60s", h.LockDelay)
	}
	if h.CheckTTL < 200*time.Millisecond || h.CheckTTL >= h.SessionTTL {
		v.errf(at("ha", "check_ttl"), "ha.check_ttl %s: must be at least 200ms and under session_ttl", h.CheckTTL)
	}
	switch h.OnConsulLoss {
	case cluster.OnConsulLossFence, cluster.OnConsulLossKeep:
	default:
		v.errf(at("ha", "on_consul_loss"), "ha.on_consul_loss %q: want fence or keep", h.OnConsulLoss)
	}
	if h.FencingHeader != "" && !validName(h.FencingHeader) {
		v.errf(at("ha", "fencing_header"), "ha.fencing_header %q: use letters, digits and '-' only", h.FencingHeader)
	}
	if vip := h.VIP; vip != nil {
		v.vip(vip)
	}
}

// vip checks the VIP against this machine's interfaces: check it where it
// will run.
func (v *validator) vip(vip *VIPConfig) {
	addr, err := netip.ParseAddr(vip.Address)
	switch {
	case vip.Address == "":
		v.errf(at("ha", "vip"), "ha.vip.address is required")
		return
	case err != nil || !addr.Is4():
		v.errf(at("ha", "vip", "address"), "ha.vip.address %q: want an IPv4 address (gratuitous ARP is IPv4)", vip.Address)
		return
	case vip.Interface == "":
		v.errf(at("ha", "vip"), "ha.vip.interface is required")
		return
	}
	if err := cluster.CheckVIP(addr, vip.Interface); errors.Is(err, cluster.ErrVIPNotInSubnet) {
		v.errf(at("ha", "vip", "address"), "ha.vip.address %s is outside every subnet of %s", addr, vip.Interface)
	} else if err != nil {
		v.errf(at("ha", "vip", "interface"), "ha.vip.interface %q: no such interface on this machine", vip.Interface)
	}
}

// hasKey reports whether mapping n has key.
func hasKey(n *yaml.Node, key string) bool {
	if n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

func validName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != ""
}
