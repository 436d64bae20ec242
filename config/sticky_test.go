package config

import (
	"errors"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kelpie-lb/kelpie/proxy"
)

// TestHashAndStickyKeys: hash and sticky keys decode, take their defaults
// from the proxy constants, and bad values are reported with their line.
func TestHashAndStickyKeys(t *testing.T) {
	c, err := Parse("k.yaml", []byte(`upstreams:
  - name: a
    balance: hash
    hash_on: "header:X-User"
    hash_balance_factor: 125
    backends: [{address: "h:1"}]
    sticky: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams[0]
	if u.HashOn != "header:X-User" || u.HashBalanceFactor != 125 || u.HashFallback != "round_robin" {
		t.Errorf("hash keys: %q %d %q", u.HashOn, u.HashBalanceFactor, u.HashFallback)
	}
	s := u.Sticky
	if s.Cookie != proxy.DefaultStickyCookie || !*s.HTTPOnly || s.Secure || s.SameSite != "lax" ||
		*s.DrainGrace != proxy.DefaultStickyDrainGrace || s.TTL != 0 || s.SecretEnv != "" {
		t.Errorf("sticky defaults: %+v", *s)
	}
	if d := Defaults().Upstreams[0]; d.HashOn != "ip" || d.HashBalanceFactor != 0 || d.Sticky != nil {
		t.Errorf("defaults: hash_on %q factor %d sticky %v", d.HashOn, d.HashBalanceFactor, d.Sticky)
	}
	zero, err := Parse("k.yaml", []byte("upstreams: [{name: a, backends: [{address: \"h:1\"}], sticky: {drain_grace: 0s}}]"))
	if err != nil || *zero.Upstreams[0].Sticky.DrainGrace != 0 {
		t.Errorf("drain_grace 0 must stay 0 (move at once): %v", err)
	}

	for _, tc := range []struct{ line, want string }{
		{`hash_on: "header:"`, `3: upstream "a": hash_on "header:"`},
		{`hash_on: uri`, `3: upstream "a": hash_on "uri"`},
		{`hash_balance_factor: 90`, `3: upstream "a": hash_balance_factor 90`},
		{`hash_fallback: ip_hash`, `3: upstream "a": hash_fallback "ip_hash"`},
		{`sticky: {cookie: "a b"}`, `3: upstream "a": sticky.cookie "a b"`},
		{`sticky: {same_site: none}`, `3: upstream "a": sticky.same_site none needs secure`},
		{`sticky: {same_site: loose}`, `3: upstream "a": sticky.same_site "loose"`},
		{`sticky: {drain_grace: -1s}`, `3: sticky.drain_grace must not be negative`},
	} {
		_, err := Parse("k.yaml", []byte("upstreams:\n  - name: a\n    "+tc.line+"\n    balance: hash\n    backends: [{address: \"h:1\"}]\n"))
		var ps Problems
		if !errors.As(err, &ps) || len(ps) != 1 {
			t.Errorf("%s: want one problem, got %v", tc.line, err)
			continue
		}
		line, sub, _ := strings.Cut(tc.want, ":")
		if got := ps[0].String(); !strings.HasPrefix(got, "k.yaml:"+line+":") || !strings.Contains(got, strings.TrimSpace(sub)) {
			t.Errorf("%s: got %q, want line %s with %q", tc.line, got, line, strings.TrimSpace(sub))
		}
	}
}

// TestReadmeShowsStickyDefaults: README's sticky.* rows agree with the
// defaults a bare `sticky: {}` block gets (Defaults() has no sticky block,
// so TestReadmeShowsDefaults cannot see them).
func TestReadmeShowsStickyDefaults(t *testing.T) {
	c, err := Parse("k.yaml", []byte("upstreams: [{name: a, backends: [{address: \"h:1\"}], sticky: {}}]"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(out, &root); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, line := range strings.Split(string(readme), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`sticky.") {
			continue
		}
		key := strings.Trim(strings.TrimSpace(cells[1]), "`")
		def := strings.Trim(strings.TrimSpace(cells[2]), "`")
		v := lookup(root.Content[0], "upstreams.0."+key)
		if v == nil {
			if def != "omitted" {
				t.Errorf("README: %s defaults to %q, the config has no value", key, def)
			}
			continue
		}
		ok, known := sameDefault(def, v)
		if def == "omitted" {
			ok, known = v.Value == "", true
		}
		if !known {
			ok = def == v.Value
		}
		checked++
		if !ok {
			t.Errorf("README: %s defaults to %q, the config to %q", key, def, v.Value)
		}
	}
	if checked < 6 {
		t.Fatalf("checked only %d sticky rows in README", checked)
	}
}

// TestHashKeysNeedBalanceHash: a hash_* key set away from its default on an
// upstream that does not balance by hash is refused at its line (it would
// do nothing), while the defaults themselves, as `kelpie config -defaults`
// prints them for every upstream, load under any balance.
func TestHashKeysNeedBalanceHash(t *testing.T) {
	for _, tc := range []struct{ balance, line, want string }{
		{"round_robin", `hash_on: "header:X-User"`, `hash_on header:X-User has no effect: balance is round_robin`},
		{"least_conn", `hash_balance_factor: 125`, `hash_balance_factor 125 has no effect: balance is least_conn`},
		{"ip_hash", `hash_fallback: least_conn`, `hash_fallback least_conn has no effect: balance is ip_hash`},
	} {
		_, err := Parse("k.yaml", []byte("upstreams:\n  - name: a\n    balance: "+tc.balance+"\n    "+tc.line+"\n    backends: [{address: \"h:1\"}]\n"))
		var ps Problems
		if !errors.As(err, &ps) || len(ps) != 1 {
			t.Errorf("%s with %s: want one problem, got %v", tc.line, tc.balance, err)
			continue
		}
		if got := ps[0].String(); !strings.HasPrefix(got, "k.yaml:4:") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want line 4 with %q", tc.line, got, tc.want)
		}
		if _, err := Parse("k.yaml", []byte("upstreams:\n  - name: a\n    balance: hash\n    "+tc.line+"\n    backends: [{address: \"h:1\"}]\n")); err != nil {
			t.Errorf("%s with balance: hash: %v", tc.line, err)
		}
	}
	for _, line := range []string{"hash_on: ip", "hash_balance_factor: 0", "hash_fallback: round_robin"} {
		if _, err := Parse("k.yaml", []byte("upstreams:\n  - name: a\n    "+line+"\n    backends: [{address: \"h:1\"}]\n")); err != nil {
			t.Errorf("%s (the default) under round_robin: %v", line, err)
		}
	}
}
