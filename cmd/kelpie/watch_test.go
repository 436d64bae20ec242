package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// swapDir is a ConfigMap volume as Kubernetes writes it: kelpie.yaml ->
// ..data/kelpie.yaml, ..data -> ..<version>, and an update is a new version
// directory and an atomic rename of a new ..data symlink over the old one.
type swapDir struct {
	t   testing.TB
	dir string
	n   int
}

func newSwapDir(t testing.TB, content string) *swapDir {
	d := &swapDir{t: t, dir: t.TempDir()}
	d.swap(content)
	if err := os.Symlink(filepath.Join("..data", "kelpie.yaml"), d.path()); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *swapDir) path() string { return filepath.Join(d.dir, "kelpie.yaml") }

func (d *swapDir) swap(content string) {
	d.t.Helper()
	d.n++
	ver := fmt.Sprintf("..v%d", d.n)
	if err := os.Mkdir(filepath.Join(d.dir, ver), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, ver, "kelpie.yaml"), []byte(content), 0o644); err != nil {
		d.t.Fatal(err)
	}
	tmp := filepath.Join(d.dir, "..data_tmp")
	if err := os.Symlink(ver, tmp); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, "..data")); err != nil {
		d.t.Fatal(err)
	}
}

// replace is an editor's save: write a new file and rename it over the old.
func replace(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".swp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestConfigWatchStep(t *testing.T) {
	t.Run("symlink swap", func(t *testing.T) {
		d := newSwapDir(t, "a")
		w := newConfigWatch(d.path())
		if w.step() {
			t.Fatal("reload with no change")
		}
		d.swap("b")
		if w.step() {
			t.Fatal("reload on the first sight of a change; it must settle for one poll")
		}
		if !w.step() {
			t.Fatal("no reload after the swapped content settled")
		}
		if w.step() || w.step() {
			t.Fatal("the same change reloaded twice")
		}
		d.swap("b") // a new version with equal content
		if w.step() || w.step() {
			t.Fatal("reload although the content did not change")
		}
	})
	t.Run("rename over, in place, missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kelpie.yaml")
		replace(t, path, "a")
		w := newConfigWatch(path)
		replace(t, path, "b")
		w.step()
		if !w.step() {
			t.Fatal("rename over the file not seen")
		}
		if err := os.WriteFile(path, []byte("c"), 0o644); err != nil {
			t.Fatal(err)
		}
		w.step()
		if err := os.WriteFile(path, []byte("cc"), 0o644); err != nil { // still being written
			t.Fatal(err)
		}
		if w.step() {
			t.Fatal("reload of content that changed between two polls")
		}
		if !w.step() {
			t.Fatal("in-place write not seen once it settled")
		}
		os.Remove(path)
		if w.step() || w.step() {
			t.Fatal("reload while the file is missing")
		}
		replace(t, path, "cc") // back with the applied content
		if w.step() || w.step() {
			t.Fatal("reload although the file came back unchanged")
		}
	})
}

// TestRunWatch runs the real binary with -watch on a Kubernetes-style
// config directory: a swapped ConfigMap moves traffic to the new backend
// without a signal, and a broken file keeps the running config.
func TestRunWatch(t *testing.T) {
	bin, err := buildKelpie()
	if err != nil {
		t.Fatal(err)
	}
	one, two := startBackend(t, named("one")), startBackend(t, named("two"))
	listen, admin := testkit.FreeAddr(t), testkit.FreeAddr(t)
	conf := func(addr string) string {
		return fmt.Sprintf("listen: %q\nadmin: {listen: %q}\nupstreams:\n  - name: a\n    backends:\n%s", listen, admin, yamlBackends(addr))
	}
	d := newSwapDir(t, conf(one.Addr))
	cmd := exec.Command(bin, "run", "-watch")
	cmd.Env = append(os.Environ(), "KELPIE_CONFIG="+d.path())
	logs, exited := startProcess(t, cmd)
	body := func() string {
		resp, err := http.Get("http://" + listen + "/")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	eventually(t, 10*time.Second, "kelpie serving from one", func() bool { return body() == "one" })

	d.swap(conf(two.Addr))
	eventually(t, 5*time.Second, "traffic on two after the ConfigMap swap", func() bool { return body() == "two" })

	d.swap("upstreams: [{name: a, balance: nope}]\n")
	logs.WaitFor(t, "config reload failed", 5*time.Second)
	if got := body(); got != "two" {
		t.Fatalf("after a broken file the proxy answers %q, want the running config's backend", got)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("kelpie did not exit after SIGTERM")
	}
}
