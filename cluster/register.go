package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// ServiceName is the Consul service every kelpie registers as.
const ServiceName = "kelpie"

// InstanceID is an instance's default ID: kelpie-<cluster>-<host>-<admin
// port>. It stays the same across restarts, so a restarted instance takes
// over its own registration instead of leaving a dead twin behind.
func InstanceID(cluster, adminAddr string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	_, port, _ := net.SplitHostPort(adminAddr)
	id := "kelpie-" + cluster + "-" + host
	if port != "" {
		id += "-" + port
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '-'
		}
		return r
	}, id)
}

// RegistrationOptions describes this instance's entry in Consul's catalog.
type RegistrationOptions struct {
	// Client talks to the local Consul agent; required.
	Client *api.Client
	// ID is the unique service ID (see InstanceID); required.
	ID string
	// Cluster is the cluster name, used as a tag; required.
	Cluster string
	// ProxyAddr is the proxy listener "host:port" the service advertises.
	// An unspecified host (0.0.0.0, ::, "") lets Consul use the node's
	// address.
	ProxyAddr string
	// ReadyURL is the /readyz URL the agent polls as the service's HTTP
	// check, e.g. http://10.0.0.5:9901/readyz.
	ReadyURL string
	// Interval and Timeout of the check. Zero means 2s and 1s.
	Interval, Timeout time.Duration
	// Tags are added after the cluster name.
	Tags []string
	// Meta is service metadata (version...).
	Meta map[string]string
}

// Register registers the instance with its /readyz check. A dead instance
// whose check stays critical for 10 minutes is removed by Consul.
func Register(ctx context.Context, o RegistrationOptions) error {
	if o.Client == nil || o.ID == "" || o.Cluster == "" {
		return errors.New("register: client, id and cluster are required")
	}
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	host, portStr, err := net.SplitHostPort(o.ProxyAddr)
	if err != nil {
		return fmt.Errorf("register %s: proxy address %q: %w", o.ID, o.ProxyAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("register %s: proxy port %q: %w", o.ID, portStr, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = ""
	}
	reg := &api.AgentServiceRegistration{
		ID: o.ID, Name: ServiceName, Address: host, Port: port,
		Tags: append([]string{o.Cluster}, o.Tags...), Meta: o.Meta,
		Check: &api.AgentServiceCheck{
			CheckID: "kelpie-ready:" + o.ID, Name: "kelpie /readyz",
			HTTP: o.ReadyURL, Interval: o.Interval.String(), Timeout: o.Timeout.String(),
			DeregisterCriticalServiceAfter: "10m",
		},
	}
	if err := o.Client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return fmt.Errorf("register %s in consul: %w", o.ID, err)
	}
	return nil
}

// Deregister removes the instance; kelpie calls it on clean shutdown.
func Deregister(ctx context.Context, client *api.Client, id string) error {
	if err := client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("deregister %s from consul: %w", id, err)
	}
	return nil
}

// Registrar keeps the registration in place: it registers at start and
// again whenever the agent lost it (an agent restart), and deregisters
// when ctx ends.
type Registrar struct {
	O RegistrationOptions
	// Every is how often the registration is verified. Zero means 10s.
	Every  time.Duration
	Logger *slog.Logger
}

// Run registers, keeps the registration, and deregisters at the end.
func (r *Registrar) Run(ctx context.Context) error {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := r.Every
	if every == 0 {
		every = 10 * time.Second
	}
	registered := false
	for {
		if !registered || !r.present(ctx) {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := Register(rctx, r.O)
			cancel()
			switch {
			case err == nil:
				if !registered {
					log.Info("registered in consul", "service", ServiceName, "id", r.O.ID, "tag", r.O.Cluster)
				}
				registered = true
			case ctx.Err() == nil:
				log.Warn("consul registration failed; retrying", "id", r.O.ID, "err", err)
			}
		}
		pause(ctx, every)
		if ctx.Err() != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			err := Deregister(dctx, r.O.Client, r.O.ID)
			cancel()
			if err != nil {
				log.Warn("consul deregistration failed", "id", r.O.ID, "err", err)
			} else {
				log.Info("deregistered from consul", "id", r.O.ID)
			}
			return ctx.Err()
		}
	}
}

func (r *Registrar) present(ctx context.Context) bool {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	svc, _, err := r.O.Client.Agent().Service(r.O.ID, (&api.QueryOptions{}).WithContext(qctx))
	return err == nil && svc != nil
}
