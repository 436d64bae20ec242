package config

import (
	"bufio"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestExampleShowsDefaults guards the promise that config.example.yaml
// shows every key with its default: apart from its extra backends, it
// decodes to exactly Defaults(), which is built from the packages'
// Default constants.
func TestExampleShowsDefaults(t *testing.T) {
	example, err := Load("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(example.Upstreams[0].Backends); n != 3 {
		t.Fatalf("example has %d backends, want 3", n)
	}
	example.Upstreams[0].Backends = example.Upstreams[0].Backends[:1]
	// Marshal prints every field, so equal output is equal configs (and
	// nil and empty lists compare equal).
	got, want := mustMarshal(t, example), mustMarshal(t, Defaults())
	if got != want {
		t.Errorf("config.example.yaml disagrees with the defaults:\n%s", lineDiff(got, want))
	}
}

func mustMarshal(t *testing.T, c *Config) string {
	t.Helper()
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// lineDiff lists the lines of a and b that differ, pairwise.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out strings.Builder
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out.WriteString("  example: " + x + "\n  default: " + y + "\n")
		}
	}
	return out.String()
}

// TestMarshalRoundTrips: what `kelpie config` prints parses back to the
// same Config, for the defaults and for the example.
func TestMarshalRoundTrips(t *testing.T) {
	example, err := Load("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Config{"defaults": Defaults(), "example": example} {
		out := mustMarshal(t, c)
		back, err := Parse(name+".yaml", []byte(out))
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		if again := mustMarshal(t, back); again != out {
			t.Errorf("%s does not round-trip:\n%s", name, lineDiff(out, again))
		}
		if *back.Upstreams[0].Health.Passive.ConsecutiveFailures != *c.Upstreams[0].Health.Passive.ConsecutiveFailures ||
			back.Limits != c.Limits || !reflect.DeepEqual(*back.Upstreams[0].Health.Active, *c.Upstreams[0].Health.Active) {
			t.Errorf("%s: parsed back to other values", name)
		}
		if strings.Contains(out, "null") || strings.Contains(out, "m0s") {
			t.Errorf("%s: want no nulls and short durations:\n%s", name, out)
		}
	}
	// An upstream without optional blocks leaves them out.
	c, err := Parse("min.yaml", []byte("upstreams: [{name: a, backends: [{address: \"h:1\"}]}]"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := Marshal(c)
	if strings.Contains(string(out), "active:") || strings.Contains(string(out), "service:") {
		t.Errorf("unset blocks printed:\n%s", out)
	}
}

// TestReadmeShowsDefaults: every row of README's default tables whose key
// is a single config key agrees with Defaults(). Keys under an upstream are
// looked up in the example upstream.
func TestReadmeShowsDefaults(t *testing.T) {
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := Marshal(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(out, &root); err != nil {
		t.Fatal(err)
	}
	checked := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		key := strings.Trim(strings.TrimSpace(cells[1]), "`")
		def := strings.Trim(strings.TrimSpace(cells[2]), "`")
		if strings.ContainsAny(key, "`, []") {
			continue // several keys in one row
		}
		v := lookup(root.Content[0], key)
		if v == nil {
			v = lookup(root.Content[0], "upstreams.0."+key)
		}
		if v == nil {
			continue // not a config key (a metric, a flag)
		}
		ok, known := sameDefault(def, v)
		if !known {
			continue // prose: "omitted", "backend address", "interval"
		}
		checked++
		if !ok {
			t.Errorf("README: %s defaults to %q, the config to %q", key, def, v.Value)
		}
	}
	if checked < 25 {
		t.Fatalf("checked only %d README rows: did the tables move?", checked)
	}
	t.Logf("%d README defaults agree with the config", checked)
}

// lookup follows a dotted path (map keys, sequence indexes) under n.
func lookup(n *yaml.Node, path string) *yaml.Node {
	for _, k := range strings.Split(path, ".") {
		switch n.Kind {
		case yaml.MappingNode:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == k {
					next = n.Content[i+1]
				}
			}
			if next == nil {
				return nil
			}
			n = next
		case yaml.SequenceNode:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(n.Content) {
				return nil
			}
			n = n.Content[i]
		default:
			return nil
		}
	}
	if n.Kind != yaml.ScalarNode {
		return nil
	}
	return n
}

// sameDefault compares a README default with a config value; known is
// false when the README states it in words this test does not read.
func sameDefault(readme string, v *yaml.Node) (ok, known bool) {
	switch readme {
	case "none", "unlimited":
		return v.Value == "0" || v.Value == "0s", true
	}
	if d, err := time.ParseDuration(readme); err == nil {
		got, err := time.ParseDuration(v.Value)
		return err == nil && got == d, true
	}
	if _, err := strconv.ParseFloat(readme, 64); err == nil || readme == "true" || readme == "false" {
		return readme == v.Value, true
	}
	if strings.HasPrefix(readme, "/") || strings.Contains(readme, "_") || strings.Contains(readme, "-") {
		return readme == v.Value, true // paths, names, ranges
	}
	return false, false
}
