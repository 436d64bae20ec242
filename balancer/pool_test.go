package balancer

import (
	"errors"
	"testing"
)

// TestUndrainAbsent: undraining an address that has left the pool forgets
// the drain, so it does not come back drained.
func TestUndrainAbsent(t *testing.T) {
	p := NewPool(Options{Name: "u"})
	p.SetMembers(SourceStatic, []Member{{Address: "a:1"}, {Address: "b:1"}})
	if _, err := p.Drain("a:1"); err != nil {
		t.Fatal(err)
	}
	p.SetMembers(SourceStatic, []Member{{Address: "b:1"}})
	if _, err := p.Undrain("a:1"); !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("undrain of an absent backend: %v, want ErrUnknownBackend", err)
	}
	p.SetMembers(SourceStatic, []Member{{Address: "a:1"}, {Address: "b:1"}})
	if got := p.Lookup("a:1").Admin(); got != AdminReady {
		t.Fatalf("returned backend is %s, want ready", got)
	}
}
