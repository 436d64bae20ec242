package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestExampleIsValid(t *testing.T) {
	cfg, err := Load("../config.example.yaml")
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	u := cfg.Upstreams[0]
	if u.Name != "web" || len(u.Backends) != 3 || !u.Backends[2].Backup || u.Consul.Service != "web" {
		t.Errorf("upstream decoded wrong: %+v", u)
	}
	if u.Health.Active.Interval != 5*time.Second || *u.Retries.Attempts != 1 || *u.PanicThreshold != 50 {
		t.Errorf("durations or ints decoded wrong: %+v", u)
	}
}

func TestProblemsHaveLines(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // "LINE: substring", in order
	}{
		{"unknown key", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n    timout: 5s\n",
			[]string{`4: unknown key "timout" in upstream`}},
		{"bad duration", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n    timeouts:\n      connect: 5\n",
			[]string{`5: bad duration "5"`}},
		{"unparseable duration", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n    timeouts:\n      connect: fast\n",
			[]string{`5:`}},
		{"negative duration", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n    timeouts:\n      connect: -1s\n",
			[]string{`5: timeouts.connect must be a positive duration`}},
		{"unknown balance", "upstreams:\n  - name: a\n    balance: fastest\n    backends: [{address: \"h:1\"}]\n",
			[]string{`3: upstream "a": unknown balance "fastest"`}},
		{"route to unknown upstream", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\nroutes:\n  - path_prefix: /x\n    upstream: b\n",
			[]string{`6: route to unknown upstream "b"`}},
		{"duplicate upstream", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n  - name: a\n    backends: [{address: \"h:2\"}]\nroutes: [{upstream: a}]\n",
			[]string{`4: upstream "a" is defined twice (first at line 2)`}},
		{"empty pool", "upstreams:\n  - name: a\n", []string{`2: upstream "a" has no backends`}},
		{"bad address", "upstreams:\n  - name: a\n    backends:\n      - address: nowhere\n", []string{`4: upstream "a" backend "nowhere": want host:port`}},
		{"several at once", "upstreams:\n  - name: a\n    balance: x\n    backends:\n      - address: \"h:1\"\n        weight: 0\n",
			[]string{`3: upstream "a": unknown balance`, `6: upstream "a": weight 0`}},
		{"duplicate key", "listen: \"a:1\"\nlisten: \"a:2\"\n", []string{`2: mapping key "listen" already defined`}},
		{"syntax", "upstreams:\n  - name: [\n", []string{`2: did not find expected node content`}},
		{"empty file", "", []string{`1: empty config`}},
		{"two documents", "upstreams: [{name: a, backends: [{address: \"h:1\"}]}]\n---\nlisten: \"b:1\"\n", []string{`2: a config file holds one YAML document`}},
		{"routes needed", "upstreams:\n  - {name: a, backends: [{address: \"h:1\"}]}\n  - {name: b, backends: [{address: \"h:2\"}]}\n",
			[]string{`1: routes are required`}},
		{"public admin without token", "admin: {listen: \"0.0.0.0:9901\"}\nupstreams: [{name: a, backends: [{address: \"h:1\"}]}]\n",
			[]string{`1: admin.listen "0.0.0.0:9901" is not a loopback address`}},
		{"health timeout above interval", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n    health:\n      active:\n        interval: 1s\n        timeout: 2s\n",
			[]string{`7: upstream "a": health.active.timeout 2s is longer than the interval 1s`}},
		{"bad outlier keys", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n    health:\n      passive:\n        count_as_failure: 4xx\n        latency: {factor: 0.5}\n        failure_percentage: {threshold: 120}\n",
			[]string{`6: count_as_failure "4xx": want 5xx or gateway`, `7: latency.factor must be above 1`, `8: failure_percentage.threshold must be in 0..100`}},
		{"unknown io mode", "io: fast\nupstreams: [{name: a, backends: [{address: \"h:1\"}]}]\n",
			[]string{`1: io "fast": want raw or std`}},
		{"acme cache without a consul prefix", "tls:\n  listen: \"127.0.0.1:8443\"\n  acme:\n    domains: [a.test]\n    cache: consul://\nupstreams: [{name: a, backends: [{address: \"h:1\"}]}]\n",
			[]string{`5: tls.acme.cache: "consul://" names no Consul KV prefix`}},
		{"bad status range", "upstreams:\n  - name: a\n    backends: [{address: \"h:1\"}]\n    health:\n      active: {expect_status: \"299-200\"}\n",
			[]string{`5: upstream "a": expect_status "299-200"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("kelpie.yaml", []byte(tt.yaml))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want Problems, got %v", err)
			}
			if len(ps) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(tt.want), err)
			}
			for i, w := range tt.want {
				line, sub, _ := strings.Cut(w, ":")
				got := ps[i].String()
				if !strings.HasPrefix(got, "kelpie.yaml:"+line+":") || !strings.Contains(got, strings.TrimSpace(sub)) {
					t.Errorf("problem %d = %q, want line %s containing %q", i, got, line, strings.TrimSpace(sub))
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	ex, _ := os.ReadFile("../config.example.yaml")
	f.Add(ex)
	f.Add([]byte("upstreams: [{name: a, backends: [{address: \"h:1\"}]}]"))
	f.Add([]byte("upstreams:\n  - name: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("want exactly one of cfg, err; got %v, %v", cfg, err)
		}
		var ps Problems
		if err != nil && errors.As(err, &ps) {
			for _, p := range ps {
				if p.Msg == "" {
					t.Fatal("problem without message")
				}
			}
		}
	})
}
