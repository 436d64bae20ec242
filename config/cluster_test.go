package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const clusterBase = `
upstreams:
  - name: web
    backends: [{address: "127.0.0.1:9001"}]
`

func TestClusterAndHADefaults(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(clusterBase+`
consul: {address: "127.0.0.1:8500"}
cluster: {name: edge, register: true}
ha:
  enabled: true
  vip: {address: 127.0.0.55, interface: lo}
`))
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.HA
	if h.LockKey != "kelpie/edge/leader" || h.SessionTTL != 10*time.Second || h.LockDelay != time.Second ||
		h.CheckTTL != 1500*time.Millisecond || h.OnConsulLoss != "fence" || h.Preempt || *h.Priority != 100 {
		t.Fatalf("defaults: %+v", h)
	}
	if !cfg.Cluster.Register || cfg.Cluster.Name != "edge" {
		t.Fatalf("cluster: %+v", cfg.Cluster)
	}
}

func TestClusterAndHAProblemsHaveLines(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"cluster without consul", clusterBase + "cluster: {name: edge}\n", "c.yaml:5: cluster needs a consul: block"},
		{"ha without consul", clusterBase + "cluster: {name: edge}\nha: {enabled: true}\n", "c.yaml:6: ha needs a consul: block"},
		{"ha without cluster", clusterBase + "consul: {}\nha: {enabled: true}\n", "c.yaml:6: ha needs a cluster: block"},
		{"missing interface", clusterBase + "consul: {}\ncluster: {name: edge}\nha:\n  enabled: true\n  vip:\n    address: 127.0.0.55\n    interface: nope0\n",
			"c.yaml:11: ha.vip.interface \"nope0\": no such interface"},
		{"vip outside subnet", clusterBase + "consul: {}\ncluster: {name: edge}\nha:\n  enabled: true\n  vip:\n    address: 10.250.0.1\n    interface: lo\n",
			"c.yaml:10: ha.vip.address 10.250.0.1 is outside every subnet of lo"},
		{"ipv6 vip", clusterBase + "consul: {}\ncluster: {name: edge}\nha: {enabled: true, vip: {address: \"::1\", interface: lo}}\n",
			"ha.vip.address \"::1\": want an IPv4 address"},
		{"short session", clusterBase + "consul: {}\ncluster: {name: edge}\nha:\n  enabled: true\n  session_ttl: 5s\n",
			"c.yaml:9: ha.session_ttl 5s: Consul accepts 10s to 24h"},
		{"bad on_consul_loss", clusterBase + "consul: {}\ncluster: {name: edge}\nha:\n  enabled: true\n  on_consul_loss: panic\n",
			"c.yaml:9: ha.on_consul_loss \"panic\": want fence or keep"},
		{"no name", clusterBase + "consul: {}\ncluster: {register: true}\n", "c.yaml:6: cluster.name is required"},
		{"unknown key", clusterBase + "consul: {}\ncluster: {name: edge}\nha: {enabled: true, vips: 1}\n", "c.yaml:7: unknown key \"vips\" in ha"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want problems, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got:\n%v\nwant a line containing %q", err, tc.want)
			}
		})
	}
}
