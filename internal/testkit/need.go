package testkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ConsulVersion is the Consul release tools/consul/build.sh builds; it
// names the default binary path.
const ConsulVersion = "1.20.6"

// Missing reports that a test cannot run because what is not on this
// machine. Under -short it skips the test, saying what is missing and how
// to get it; otherwise it fails the test, so a full run (make test, CI) can
// never pass by skipping.
func Missing(t testing.TB, what, hint string) {
	t.Helper()
	missing(t, testing.Short(), what, hint)
}

func missing(t testing.TB, short bool, what, hint string) {
	t.Helper()
	if short {
		t.Skipf("skipped under -short: needs %s (%s)", what, hint)
		return
	}
	t.Fatalf("needs %s: %s (go test -short skips this test instead)", what, hint)
}

// Chromium returns the path of a Chromium browser: $KELPIE_CHROMIUM, else
// chromium or chromium-browser on PATH. Without one the test is Missing.
func Chromium(t testing.TB) string {
	t.Helper()
	return chromium(t, testing.Short())
}

func chromium(t testing.TB, short bool) string {
	t.Helper()
	if p := os.Getenv("KELPIE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	missing(t, short, "Chromium", "apt-get install -y chromium, or tools/deps.sh, or set KELPIE_CHROMIUM")
	return ""
}

// ConsulBinary returns the consul binary's path: $KELPIE_CONSUL_BIN, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/kelpie/bin/consul-<ConsulVersion>, where
// tools/consul/build.sh puts it. Without one the test is Missing.
func ConsulBinary(t testing.TB) string {
	t.Helper()
	return consulBinary(t, testing.Short())
}

func consulBinary(t testing.TB, short bool) string {
	t.Helper()
	path := consulPath()
	if path == "" {
		missing(t, short, "a consul binary", "no KELPIE_CONSUL_BIN and no home directory for the default path")
		return ""
	}
	if _, err := os.Stat(path); err != nil {
		missing(t, short, "a consul binary", fmt.Sprintf("%v: run tools/consul/build.sh or set KELPIE_CONSUL_BIN", err))
		return ""
	}
	return path
}

func consulPath() string {
	if p := os.Getenv("KELPIE_CONSUL_BIN"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "kelpie", "bin", "consul-"+ConsulVersion)
}

// ContainerEngine returns the path of a container engine's command line
// (docker, else podman) whose daemon answers. Without one the test is
// Missing.
func ContainerEngine(t testing.TB) string {
	t.Helper()
	return containerEngine(t, testing.Short())
}

func containerEngine(t testing.TB, short bool) string {
	t.Helper()
	var tried []string
	for _, name := range []string{"docker", "podman"} {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, p, "version").CombinedOutput()
		cancel()
		if err == nil {
			return p
		}
		tried = append(tried, fmt.Sprintf("%s version: %v: %.200s", p, err, out))
	}
	hint := "install Docker Engine or Podman and start it"
	if len(tried) > 0 {
		hint = fmt.Sprintf("%v", tried)
	}
	missing(t, short, "a container engine", hint)
	return ""
}
