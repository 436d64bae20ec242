package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	File string
	Line int // 0 when no line applies
	Msg  string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Msg)
}

// Problems is every problem found in one file, in line order; it is the
// error Load returns for an invalid file. Its message has one
// "FILE:LINE: message" line per problem.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Parse decodes data as the config file name (used in messages only).
func Parse(name string, data []byte) (*Config, error) {
	var ps Problems
	add := func(line int, format string, args ...any) {
		ps = append(ps, Problem{File: name, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	// A node tree first: it locates semantic problems by line.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		addYAMLError(err, add)
		return nil, ps
	}
	if len(root.Content) == 0 {
		add(1, "empty config: at least one upstream is required")
		return nil, ps
	}
	cfg := &Config{Path: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		addYAMLError(err, add)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		add(extra.Line, "a config file holds one YAML document; found another")
	}
	if len(ps) > 0 {
		sortProblems(ps)
		return nil, ps
	}
	applyDefaults(cfg)
	v := &validator{root: root.Content[0], add: add}
	v.validate(cfg)
	if len(ps) > 0 {
		sortProblems(ps)
		return nil, ps
	}
	return cfg, nil
}

func addYAMLError(err error, add func(int, string, ...any)) {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: unmarshal errors:\n")
		m = strings.TrimSpace(m)
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			n, _ := strconv.Atoi(sm[1])
			add(n, "%s", friendlier(sm[2]))
			continue
		}
		add(0, "%s", m)
	}
}

var (
	unknownFieldRE = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
	durationRE     = regexp.MustCompile("^cannot unmarshal !!\\w+ `([^`]*)` into time.Duration$")
)

// friendlier rewrites yaml.v3's Go-flavoured messages for people.
func friendlier(m string) string {
	if sm := unknownFieldRE.FindStringSubmatch(m); sm != nil {
		return fmt.Sprintf("unknown key %q in %s", sm[1], strings.ToLower(sm[2]))
	}
	if sm := durationRE.FindStringSubmatch(m); sm != nil {
		return fmt.Sprintf("bad duration %q: write it with a unit, like \"500ms\" or \"5s\"", sm[1])
	}
	if strings.Contains(m, "time.Duration") {
		return strings.Replace(m, "time: invalid duration", "bad duration", 1)
	}
	return m
}

func sortProblems(ps Problems) {
	for i := 1; i < len(ps); i++ { // insertion sort: stable, and lists are short
		for j := i; j > 0 && ps[j].Line < ps[j-1].Line; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// lineOf finds the line of the value at path (map keys and slice indexes)
// under n; where the path runs out early it returns the deepest line found.
func lineOf(n *yaml.Node, path ...any) int {
	line := n.Line
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == k {
					n, found = n.Content[i+1], true
					line = n.Line
					break
				}
			}
			if !found {
				return line
			}
		case int:
			if n.Kind != yaml.SequenceNode || k >= len(n.Content) {
				return line
			}
			n = n.Content[k]
			line = n.Line
		}
	}
	return line
}
