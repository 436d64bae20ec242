package admin

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
)

func TestStateSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	p := newPool(t, "web", "127.0.0.1:9001", "127.0.0.1:9002")
	srv := serve(t, Options{StatePath: path}, p)
	if r := call(t, "POST", srv.URL+"/api/v1/upstreams/web/backends/127.0.0.1:9002/drain", "", ""); r.code != 200 {
		t.Fatalf("drain = %d", r.code)
	}
	st, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Drained["web"]; !slices.Equal(got, []string{"127.0.0.1:9002"}) {
		t.Fatalf("saved drained = %v", st.Drained)
	}

	// A new process: restore before the members arrive, as cmd does.
	fresh := balancer.NewPool(balancer.Options{Name: "web"})
	defer fresh.Close()
	st.Apply([]*balancer.Pool{fresh})
	fresh.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "127.0.0.1:9001"}, {Address: "127.0.0.1:9002"}})
	if got := fresh.Lookup("127.0.0.1:9002").Admin(); got != balancer.AdminDrained {
		t.Fatalf("restored backend admin = %v, want drained", got)
	}
	if got := fresh.Lookup("127.0.0.1:9001").Admin(); got != balancer.AdminReady {
		t.Fatalf("other backend admin = %v, want ready", got)
	}

	if r := call(t, "POST", srv.URL+"/api/v1/upstreams/web/backends/127.0.0.1:9002/ready", "", ""); r.code != 200 {
		t.Fatalf("ready = %d", r.code)
	}
	if st, err = LoadState(path); err != nil || len(st.Drained) != 0 {
		t.Fatalf("after ready: %v, %v; want nothing drained", st.Drained, err)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("state dir holds %d files, want 1", len(entries))
	}
}

func TestLoadStateMissingAndBad(t *testing.T) {
	dir := t.TempDir()
	st, err := LoadState(filepath.Join(dir, "absent.json"))
	if err != nil || st.Drained == nil || len(st.Drained) != 0 {
		t.Fatalf("missing file: %+v, %v; want empty state", st, err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{not json"), 0o600)
	if _, err := LoadState(bad); err == nil {
		t.Fatal("corrupt state file loaded without error")
	}
}
