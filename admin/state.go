package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kelpie-lb/kelpie/balancer"
)

// State is what the admin state file holds: the addresses an operator
// drained, per upstream name. It lets drains survive a restart.
type State struct {
	Drained map[string][]string `json:"drained"`
}

// LoadState reads the state file at path. A missing file is an empty state,
// not an error.
func LoadState(path string) (State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{Drained: map[string][]string{}}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("admin state: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return State{}, fmt.Errorf("admin state %s: %w", path, err)
	}
	if st.Drained == nil {
		st.Drained = map[string][]string{}
	}
	return st, nil
}

// Apply drains, in each pool, the addresses st lists under its name, whether
// or not they are members yet. Call it before discovery starts so a drained
// backend never receives a request.
func (st State) Apply(pools []*balancer.Pool) {
	for _, p := range pools {
		if addrs := st.Drained[p.Name()]; len(addrs) > 0 {
			p.RestoreDrained(addrs)
		}
	}
}

// SaveState writes the drained addresses of pools to path atomically: a
// temporary file in the same directory, synced, then renamed over path, so a
// crash leaves either the old file or the new one.
func SaveState(path string, pools []*balancer.Pool) error {
	return saveState(path, pools, nil)
}

// saveState is SaveState leaving out the drains skip reports (fleet drains:
// Consul keeps those, and a local copy would outlive their lifting).
func saveState(path string, pools []*balancer.Pool, skip func(upstream, address string) bool) error {
	st := State{Drained: map[string][]string{}}
	for _, p := range pools {
		var d []string
		for _, a := range p.Drained() {
			if skip == nil || !skip(p.Name(), a) {
				d = append(d, a)
			}
		}
		if len(d) > 0 {
			st.Drained[p.Name()] = d
		}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("admin state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("admin state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("admin state %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("admin state %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("admin state %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("admin state: %w", err)
	}
	return nil
}
