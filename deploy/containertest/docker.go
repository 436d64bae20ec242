// Package containertest drives a Docker Engine from Go tests through the
// docker CLI (os/exec; no client library): images built from binaries built
// on this machine, private networks, containers, and cleanup by ID.
//
// Every resource a test creates has a unique name and is removed by ID in
// t.Cleanup, also when the test fails. In -short mode the tests that need
// an engine skip and say why; otherwise a missing engine fails them.
package containertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// cmdTimeout bounds one docker command; none of them should take long
// except an image build.
const cmdTimeout = 3 * time.Minute

// RequireEngine makes t need a Docker Engine: under -short it skips t,
// saying why; otherwise a missing engine fails it (testkit.ContainerEngine),
// so CI cannot pass by skipping the suite.
func RequireEngine(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped under -short: the container suite needs a Docker Engine and takes minutes")
	}
	testkit.ContainerEngine(t)
}

// Docker runs the docker CLI with args and returns its trimmed stdout.
func Docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// MustDocker is Docker that fails t on error.
func MustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Docker(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// UniqueName returns prefix plus random hex: container, network and image
// names that never collide with another test run's.
func UniqueName(prefix string) string {
	b := make([]byte, 5)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Root is the repository's top directory.
func Root(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// Images are the images a suite runs, built once per test binary under
// unique names and removed by ID when the tests end (see RemoveImages).
type Images struct {
	Kelpie, Backend string
}

var (
	imagesMu  sync.Mutex
	built     = map[string]string{} // what -> image name
	buildErrs = map[string]error{}
	imageIDs  []string
	runTag    = UniqueName("kelpie-test")
)

// BuildImages builds kelpie's image (tools/image.sh) and the test
// backend's (tools/example-images.sh) once, under unique names.
func BuildImages(t testing.TB) Images {
	t.Helper()
	return Images{Kelpie: buildImage(t, "kelpie"), Backend: buildImage(t, "backend")}
}

// ConsulImage builds the Consul agent's image once (the first static
// Consul build takes minutes; tools/consul caches it).
func ConsulImage(t testing.TB) string {
	t.Helper()
	return buildImage(t, "consul")
}

func buildImage(t testing.TB, what string) string {
	t.Helper()
	imagesMu.Lock()
	defer imagesMu.Unlock()
	if name, ok := built[what]; ok {
		if err := buildErrs[what]; err != nil {
			t.Fatal(err)
		}
		return name
	}
	name := runTag + "-" + what + ":test"
	script, args, env := "example-images.sh", []string{what}, []string{"BACKEND_IMAGE=" + name, "CONSUL_IMAGE=" + name}
	if what == "kelpie" {
		script, args, env = "image.sh", nil, []string{"KELPIE_IMAGE=" + name}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(Root(t), "tools", script), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if id, ierr := Docker("image", "inspect", "--format", "{{.Id}}", name); ierr == nil {
		imageIDs = append(imageIDs, id)
	}
	built[what] = name
	if err != nil {
		buildErrs[what] = fmt.Errorf("tools/%s %s: %w\n%s", script, what, err, out)
		t.Fatal(buildErrs[what])
	}
	return name
}

// RemoveImages removes the images built so far; call it from TestMain
// after the tests, failed or not.
func RemoveImages() {
	imagesMu.Lock()
	defer imagesMu.Unlock()
	for _, id := range imageIDs {
		remove("image", "rm", "-f", id)
	}
	imageIDs = nil
}

// Network creates a private bridge network with a unique name and removes
// it by ID when t ends. It returns the name.
func Network(t testing.TB) string {
	t.Helper()
	name := UniqueName("kelpie-test-net")
	id := MustDocker(t, "network", "create", "--driver", "bridge", name)
	t.Cleanup(func() {
		if err := remove("network", "rm", id); err != nil {
			t.Errorf("remove network %s: %v", name, err)
		}
	})
	return name
}

// Container is one running container a test started.
type Container struct {
	ID, Name string
}

// Run starts a detached container from args (docker run's options, image
// and command, without --name and -d) under a unique name with prefix,
// and removes it (forcibly, by ID) when t ends; on failure its logs go to
// the test log first.
func Run(t testing.TB, prefix string, args ...string) *Container {
	t.Helper()
	name := UniqueName(prefix)
	id, err := Docker(append([]string{"run", "-d", "--name", name}, args...)...)
	if id != "" || err == nil {
		t.Cleanup(func() {
			if t.Failed() {
				if logs, err := logsOf(id); err == nil {
					t.Logf("logs of %s:\n%s", name, logs)
				}
			}
			if err := remove("rm", "-f", "-v", id); err != nil {
				t.Errorf("remove container %s: %v", name, err)
			}
		})
	}
	if err != nil {
		// docker run may have created the container before failing to start it.
		if cid, ierr := Docker("container", "inspect", "--format", "{{.Id}}", name); ierr == nil {
			Docker("rm", "-f", "-v", cid)
		}
		t.Fatal(err)
	}
	return &Container{ID: id, Name: name}
}

// remove runs a docker removal, trying again when the command fails or
// times out: a daemon stalled for minutes on a loaded machine (seen here)
// must not leave the container, and with it its network and image, behind.
func remove(args ...string) error {
	var err error
	for try := 0; try < 3; try++ {
		if _, err = Docker(args...); err == nil || strings.Contains(err.Error(), "No such") {
			return nil
		}
	}
	return err
}

func logsOf(id string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "logs", "--tail", "200", id).CombinedOutput()
	return string(out), err
}

// Inspect returns a Go-template field of the container, e.g.
// "{{.State.Status}}".
func (c *Container) Inspect(t testing.TB, format string) string {
	t.Helper()
	return MustDocker(t, "container", "inspect", "--format", format, c.ID)
}

// IP returns the container's address on network.
func (c *Container) IP(t testing.TB, network string) string {
	t.Helper()
	return c.Inspect(t, fmt.Sprintf("{{(index .NetworkSettings.Networks %q).IPAddress}}", network))
}

// HostPort returns the 127.0.0.1:PORT that the container's port (e.g.
// "8080/tcp") is published on.
func (c *Container) HostPort(t testing.TB, port string) string {
	t.Helper()
	out := MustDocker(t, "port", c.ID, port)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "127.0.0.1:") {
			return strings.TrimSpace(line)
		}
	}
	t.Fatalf("container %s: port %s not published on 127.0.0.1: %q", c.Name, port, out)
	return ""
}

// Logs returns the container's recent output.
func (c *Container) Logs(t testing.TB) string {
	t.Helper()
	out, err := logsOf(c.ID)
	if err != nil {
		t.Fatalf("logs of %s: %v", c.Name, err)
	}
	return out
}
