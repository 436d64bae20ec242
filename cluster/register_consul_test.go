package cluster

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestRegistrarRegistersWithReadyzAndDeregisters(t *testing.T) {
	agent := needConsul(t)
	var ready atomic.Bool
	ready.Store(true)
	readyz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer readyz.Close()

	r := &Registrar{O: RegistrationOptions{
		Client: agent.Client, ID: "kelpie-edge-test-9901", Cluster: "edge",
		ProxyAddr: "127.0.0.1:8080", ReadyURL: readyz.URL + "/readyz",
		Interval: 200 * time.Millisecond,
	}, Every: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	status := func(want string) {
		t.Helper()
		var index uint64
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			entries, meta, err := agent.Client.Health().Service(ServiceName, "edge", false, &api.QueryOptions{WaitIndex: index, WaitTime: time.Second})
			if err == nil {
				index = meta.LastIndex
				if len(entries) == 1 && entries[0].Service.ID == "kelpie-edge-test-9901" && entries[0].Service.Port == 8080 &&
					entries[0].Checks.AggregatedStatus() == want {
					return
				}
				if want == "gone" && len(entries) == 0 {
					return
				}
			}
		}
		t.Fatalf("kelpie service never reached %s", want)
	}
	status(api.HealthPassing)
	ready.Store(false)
	status(api.HealthCritical)
	ready.Store(true)
	status(api.HealthPassing)

	// An agent that lost the registration gets it back.
	if err := agent.Client.Agent().ServiceDeregister("kelpie-edge-test-9901"); err != nil {
		t.Fatal(err)
	}
	status(api.HealthPassing)

	cancel()
	<-done
	status("gone")
}
