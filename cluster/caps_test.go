package cluster

import (
	"errors"
	"strings"
	"testing"
)

// TestNeedNetAdmin: the refused-change error names --user 0:0 and file
// capabilities exactly when a non-root process has CAP_NET_ADMIN bounded
// but not effective (docker run --cap-add NET_ADMIN with the image's USER).
func TestNeedNetAdmin(t *testing.T) {
	status := func(eff, bnd string) string {
		return "Name:\tkelpie\nCapInh:\t0000000000000000\nCapPrm:\t" + eff + "\nCapEff:\t" + eff + "\nCapBnd:\t" + bnd + "\nCapAmb:\t0000000000000000\n"
	}
	const dockerBnd = "00000000a80435fb" // Docker's defaults plus NET_ADMIN (bit 12)
	for _, c := range []struct {
		name   string
		uid    int
		status string
		hint   bool
	}{
		{"non-root with NET_ADMIN only bounded", 65532, status("0000000000000000", dockerBnd), true},
		{"non-root without NET_ADMIN at all", 65532, status("0000000000000000", "00000000a80425fb"), false},
		{"non-root with NET_ADMIN effective (file capability)", 65532, status("0000000000001000", dockerBnd), false},
		{"root without NET_ADMIN", 0, status("00000000a80425fb", "00000000a80425fb"), false},
		{"root with NET_ADMIN only bounded", 0, status("0000000000000000", dockerBnd), false},
		{"unreadable status", 65532, "", false},
	} {
		err := needNetAdmin(c.uid, c.status)
		if !errors.Is(err, ErrNeedNetAdmin) {
			t.Errorf("%s: %v does not wrap ErrNeedNetAdmin", c.name, err)
		}
		msg := err.Error()
		hint := strings.Contains(msg, "--user 0:0 --cap-add NET_ADMIN") && strings.Contains(msg, "setcap cap_net_admin+ep")
		if hint != c.hint {
			t.Errorf("%s: remedies named %v, want %v: %s", c.name, hint, c.hint, msg)
		}
	}
}
