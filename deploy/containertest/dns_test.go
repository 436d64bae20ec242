package containertest

import (
	"testing"
	"time"
)

// dnsBound is how soon a backend name that moved to a new address must be
// served there: kelpie forgets a name's addresses when none accepts a
// connection, so this is far below the 5s DNS cache; the slack covers the
// docker commands and a busy machine.
const dnsBound = 5 * time.Second

// TestContainerBackendMovesAddress replaces backend b2's container with a
// new one (a new IP) under the same DNS name, as a redeploy does: for a
// while the name has two addresses, then only the new one. Traffic follows
// without a reload and without a client-visible error.
func TestContainerBackendMovesAddress(t *testing.T) {
	e := newEnv(t, envOptions{})
	l := startLoad(t, e.proxy, "/")
	warmUp(t, l, loadRate)
	old := e.backends["b2"]
	oldIP := old.IP(t, e.net)
	repl := Run(t, "kelpie-test-b2new", "--network", e.net, "--network-alias", "b2",
		e.img.Backend, "-listen", ":8080", "-name", "b2new", "-delays")
	newIP := repl.IP(t, e.net)
	if newIP == oldIP {
		t.Fatalf("the replacement got the old IP %s", oldIP)
	}
	warmUp(t, l, loadRate) // b2 resolves to both addresses meanwhile
	start := time.Now()
	MustDocker(t, "rm", "-f", old.ID)
	before := l.snapshot().By["b2new"]
	d := e.timeUntil(start, dnsBound, "b2's traffic on the new address", func() bool {
		return l.snapshot().By["b2new"] >= before+20
	})
	if !e.eligible("b2") {
		t.Errorf("b2 out of rotation after its name moved: %+v", e.backendStates())
	}
	warmUp(t, l, loadRate)
	r := l.stop()
	requireNoErrors(t, r)
	t.Logf("b2 moved from %s to %s: 20 answers from the new address %s after the old container was removed (bound %s); load: %s",
		oldIP, newIP, d.Round(time.Millisecond), dnsBound, r)
}
