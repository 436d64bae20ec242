package config

import (
	"bytes"
	"fmt"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// Marshal renders c as a config file that Parse reads back to the same
// Config: every key that has a value, durations written the way people
// write them ("5m", not "5m0s"), unset optional blocks left out.
func Marshal(c *Config) ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(c); err != nil {
		return nil, fmt.Errorf("config %s: %w", c.Path, err)
	}
	tidy(&root)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("config %s: %w", c.Path, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config %s: %w", c.Path, err)
	}
	return buf.Bytes(), nil
}

// zeroUnits matches the zero minutes and seconds time.Duration.String
// appends to whole hours and minutes.
var zeroUnits = regexp.MustCompile(`^(\d+h)?(\d+m)?0s$`)

// tidy drops null values (optional blocks left unset) from mappings and
// shortens durations, in place.
func tidy(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				continue
			}
			kept = append(kept, n.Content[i], n.Content[i+1])
		}
		n.Content = kept
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && zeroUnits.MatchString(n.Value) {
		if d, err := time.ParseDuration(n.Value); err == nil && d != 0 {
			n.Value = shortDuration(d)
		}
	}
	for _, c := range n.Content {
		tidy(c)
	}
}

// shortDuration writes d without trailing zero units: 5m, 1h30m, 90s.
func shortDuration(d time.Duration) string {
	s := d.String()
	for _, suffix := range []string{"m0s", "h0m"} {
		if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
			s = s[:len(s)-len(suffix)+1]
		}
	}
	return s
}
