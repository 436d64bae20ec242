package config

import (
	"os"
	"path/filepath"

	"github.com/kelpie-lb/kelpie/health"
)

// execCheck validates a script check: it needs the top-level opt-in, a
// command, and a program that exists and is executable (a bare name is
// looked up in the PATH script checks run with).
func (v *validator) execCheck(u *Upstream, a *Active, up func(...any) []any) {
	if !v.allowExec {
		v.errf(up("health", "active", "type"), "upstream %q: health.active.type exec runs programs: it needs allow_exec_checks: true at the top level", u.Name)
	}
	if len(a.Command) == 0 || a.Command[0] == "" {
		v.errf(up("health", "active", "type"), "upstream %q: health.active.type exec needs command: [program, args...]", u.Name)
		return
	}
	prog := a.Command[0]
	if !filepath.IsAbs(prog) {
		found := ""
		for _, dir := range filepath.SplitList(health.ExecPath) {
			if p := filepath.Join(dir, prog); executable(p) {
				found = p
				break
			}
		}
		if found == "" {
			v.errf(up("health", "active", "command", 0), "upstream %q: health.active.command %q: not found in %s (give an absolute path)", u.Name, prog, health.ExecPath)
		}
		return
	}
	if !executable(prog) {
		v.errf(up("health", "active", "command", 0), "upstream %q: health.active.command %q: not an executable file", u.Name, prog)
	}
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
