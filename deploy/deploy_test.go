// Package deploy holds the example deployments; its tests check that they
// are valid: the compose file through `docker compose config`, the
// Kubernetes manifest and the Nomad job structurally, and every kelpie
// config in them through kelpie's own loader.
package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// composeCLI returns the command that runs compose: the docker plugin, or
// the standalone docker-compose.
func composeCLI(t *testing.T) []string {
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	testkit.Missing(t, "docker compose or docker-compose", "install the compose plugin or docker-compose")
	return nil
}

func TestComposeExample(t *testing.T) {
	cli := composeCLI(t)
	args := append(cli[1:], "-f", "compose/compose.yaml", "config")
	cmd := exec.Command(cli[0], args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	var c struct {
		Services map[string]struct {
			Image       string
			NetworkMode string `yaml:"network_mode"`
			Command     []string
			Ports       []any
			Volumes     []any
			DependsOn   any `yaml:"depends_on"`
		}
	}
	if err := yaml.Unmarshal(out, &c); err != nil {
		t.Fatalf("compose config output: %v", err)
	}
	k, ok := c.Services["kelpie"]
	if !ok {
		t.Fatal("no kelpie service")
	}
	if k.NetworkMode != "service:app" {
		t.Errorf("kelpie's network_mode = %q, want service:app (a sidecar in the app's network namespace)", k.NetworkMode)
	}
	if !strings.HasPrefix(k.Image, "kelpie:") {
		t.Errorf("kelpie's image %q is not make image's", k.Image)
	}
	if !slicesContains(k.Command, "-watch") {
		t.Errorf("kelpie's command %q lacks -watch", k.Command)
	}
	if got := dump(k.Volumes); !strings.Contains(got, "/etc/kelpie") || strings.Contains(got, "/etc/kelpie/kelpie.yaml") {
		t.Errorf("kelpie's volumes %s: want the directory /etc/kelpie mounted, not the file", got)
	}
	if got := dump(c.Services["app"].Ports); !strings.Contains(got, "8080") || !strings.Contains(got, "127.0.0.1") {
		t.Errorf("app's ports %s: want kelpie's 8080 published on 127.0.0.1", got)
	}
	backends := 0
	for name, s := range c.Services {
		if strings.HasPrefix(name, "catalog-") {
			backends++
		}
		if strings.Contains(s.Image, "/") {
			t.Errorf("service %s uses %q: the example must run on images built on this machine", name, s.Image)
		}
	}
	if backends != 3 || c.Services["consul"].Image == "" {
		t.Errorf("want three catalog backends and a consul agent; have %d backends", backends)
	}
	cfg := loadConfig(t, "compose/kelpie/kelpie.yaml", nil)
	if cfg.Consul.Address != "consul:8500" {
		t.Errorf("consul.address %q: want the compose service consul:8500", cfg.Consul.Address)
	}
	hcl, err := os.ReadFile("compose/consul/catalog.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"catalog-1", "catalog-2", "catalog-3"} {
		if !strings.Contains(string(hcl), `address = "`+name+`"`) {
			t.Errorf("compose/consul/catalog.hcl does not register %s by its container name", name)
		}
	}
}

// loadConfig validates a kelpie config with kelpie's own loader.
func loadConfig(t *testing.T, name string, data []byte) *config.Config {
	t.Helper()
	var err error
	if data == nil {
		if data, err = os.ReadFile(name); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse(name, data)
	if err != nil {
		t.Fatalf("kelpie config in %s is invalid:\n%v", name, err)
	}
	return cfg
}

func dump(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

type probe struct {
	HTTPGet struct {
		Path string
		Port any
	} `yaml:"httpGet"`
}

type container struct {
	Name          string
	Image         string
	RestartPolicy string `yaml:"restartPolicy"`
	Args          []string
	Ports         []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	VolumeMounts []struct {
		Name      string
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
}

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string
	Metadata   struct{ Name string }
	Data       map[string]string
	Spec       struct {
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
				InitContainers                []container `yaml:"initContainers"`
				Containers                    []container
				Volumes                       []struct {
					Name      string
					ConfigMap *struct{ Name string } `yaml:"configMap"`
				}
			}
		}
	}
}

func TestKubernetesExample(t *testing.T) {
	f, err := os.Open("kubernetes/kelpie-sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	objs := map[string]k8sObject{}
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kelpie-sidecar.yaml: %v", err)
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("a document without apiVersion, kind or metadata.name: %+v", o)
		}
		objs[o.Kind] = o
	}
	dep, ok := objs["Deployment"]
	if !ok {
		t.Fatal("no Deployment")
	}
	ps := dep.Spec.Template.Spec
	var k *container
	for i := range ps.InitContainers {
		if ps.InitContainers[i].Name == "kelpie" {
			k = &ps.InitContainers[i]
		}
	}
	if k == nil {
		t.Fatal("kelpie is not an init container (a native sidecar)")
	}
	if k.RestartPolicy != "Always" {
		t.Errorf("kelpie's restartPolicy = %q, want Always (native sidecar)", k.RestartPolicy)
	}
	if !slicesContains(k.Args, "-watch") {
		t.Errorf("kelpie's args %q lack -watch", k.Args)
	}
	adminPort := 0
	for _, p := range k.Ports {
		if p.Name == "admin" {
			adminPort = p.ContainerPort
		}
	}
	for _, c := range []struct {
		name string
		p    *probe
		path string
	}{{"startupProbe", k.StartupProbe, "/healthz"}, {"livenessProbe", k.LivenessProbe, "/healthz"}, {"readinessProbe", k.ReadinessProbe, "/readyz"}} {
		if c.p == nil || c.p.HTTPGet.Path != c.path || c.p.HTTPGet.Port != "admin" {
			t.Errorf("kelpie's %s: want httpGet %s on the admin port", c.name, c.path)
		}
	}

	// The config comes from the ConfigMap, mounted as a directory.
	var cmName string
	for _, v := range ps.Volumes {
		for _, m := range k.VolumeMounts {
			if m.Name == v.Name && v.ConfigMap != nil {
				if m.MountPath != "/etc/kelpie" || m.SubPath != "" {
					t.Errorf("ConfigMap mounted at %q subPath %q: want the directory /etc/kelpie (subPath mounts never update)", m.MountPath, m.SubPath)
				}
				cmName = v.ConfigMap.Name
			}
		}
	}
	cm := objs["ConfigMap"]
	if cmName == "" || cm.Metadata.Name != cmName {
		t.Fatalf("kelpie mounts ConfigMap %q; the file defines %q", cmName, cm.Metadata.Name)
	}
	cfg := loadConfig(t, "kubernetes ConfigMap "+cmName, []byte(cm.Data["kelpie.yaml"]))
	if !strings.HasSuffix(cfg.Admin.Listen, ":"+itoa(adminPort)) {
		t.Errorf("admin.listen %q is not the probed admin port %d", cfg.Admin.Listen, adminPort)
	}
	if cfg.Shutdown.ReadinessDelay <= 0 {
		t.Error("shutdown.readiness_delay is 0: with no preStop hook, the pod would leave endpoints after kelpie stopped accepting")
	}
	need := cfg.Shutdown.ReadinessDelay + cfg.Shutdown.Grace
	if got := time.Duration(ps.TerminationGracePeriodSeconds) * time.Second; got <= need {
		t.Errorf("terminationGracePeriodSeconds %s must exceed readiness_delay + grace = %s", got, need)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

var nomadTemplate = regexp.MustCompile(`(?s)data\s*=\s*<<EOT\n(.*?)\nEOT`)

func TestNomadExample(t *testing.T) {
	src, err := os.ReadFile("nomad/kelpie.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	if strings.Count(s, "{") != strings.Count(s, "}") {
		t.Fatalf("kelpie.nomad.hcl: %d '{' but %d '}'", strings.Count(s, "{"), strings.Count(s, "}"))
	}
	for _, want := range []string{`job "kelpie"`, `provider = "consul"`, `path     = "/readyz"`, `"-watch"`, `"local/kelpie:/etc/kelpie"`, `destination = "local/kelpie/kelpie.yaml"`} {
		if !strings.Contains(s, want) {
			t.Errorf("kelpie.nomad.hcl lacks %s", want)
		}
	}
	m := nomadTemplate.FindStringSubmatch(s)
	if m == nil {
		t.Fatal("no kelpie config template (data = <<EOT ... EOT)")
	}
	// Nomad renders {{ ... }}; stand in a plausible value.
	rendered := regexp.MustCompile(`\{\{[^}]*\}\}`).ReplaceAllString(m[1], "10.0.0.1")
	cfg := loadConfig(t, "nomad template", []byte(rendered))
	if cfg.Consul.Address != "10.0.0.1:8500" {
		t.Errorf("consul.address %q: want the client's agent", cfg.Consul.Address)
	}
}
