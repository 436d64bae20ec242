package consultest

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestAgentStartRegisterRestart(t *testing.T) {
	start := time.Now()
	a := Start(t)
	t.Logf("agent ready in %v (pid %d, %s)", time.Since(start), a.PID(), a.HTTPAddr)
	a.Register("web-1", "web", "", 9001, []string{"v1"}, nil, api.HealthPassing)
	es, meta, err := a.Client.Health().Service("web", "", true, nil)
	if err != nil || len(es) != 1 || es[0].Node.Address != "127.0.0.1" || es[0].Service.Address != "" {
		t.Fatalf("health: %v %v", es, err)
	}
	idx := meta.LastIndex
	start = time.Now()
	a.Restart()
	t.Logf("restart in %v (pid %d)", time.Since(start), a.PID())
	es, meta, err = a.Client.Health().Service("web", "", true, nil)
	if err != nil || len(es) != 0 {
		t.Fatalf("after restart: %v %v", es, err)
	}
	t.Logf("index before %d after %d", idx, meta.LastIndex)
}
