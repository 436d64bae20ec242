package containertest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// TestContainerSidecar runs kelpie in an application container's network
// namespace (--network container:app), as deploy/compose does: inbound
// traffic reaches the application on 127.0.0.1 through kelpie, and the
// application's outbound calls to 127.0.0.1 with Host: catalog reach a
// backend on the private network by its DNS name. The ports are published
// on the application's container; the admin API, off loopback, has a token.
func TestContainerSidecar(t *testing.T) {
	RequireEngine(t)
	img := BuildImages(t)
	net := Network(t)
	Run(t, "kelpie-test-catalog", "--network", net, "--network-alias", "catalog-1",
		img.Backend, "-listen", ":8080", "-name", "catalog-1")
	app := Run(t, "kelpie-test-app", "--network", net,
		"-p", "127.0.0.1::8080", "-p", "127.0.0.1::9901",
		img.Backend, "-listen", "127.0.0.1:8081", "-name", "app")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	conf := `listen: ":8080"
admin: {listen: ":9901", token_env: KELPIE_ADMIN_TOKEN}
upstreams:
  - name: app
    backends: [{address: "127.0.0.1:8081"}]
  - name: catalog
    backends: [{address: "catalog-1:8080"}]
routes:
  - {host: catalog, upstream: catalog}
  - {path_prefix: /, upstream: app}
`
	if err := os.WriteFile(filepath.Join(dir, "kelpie.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	token := UniqueName("token")
	Run(t, "kelpie-test-sidecar", "--network", "container:"+app.ID,
		"-v", dir+":/etc/kelpie:ro", "-e", "KELPIE_ADMIN_TOKEN="+token, img.Kelpie, "run")
	proxy, admin := app.HostPort(t, "8080/tcp"), "http://"+app.HostPort(t, "9901/tcp")

	get := func(host string) string {
		req, _ := http.NewRequest(http.MethodGet, "http://"+proxy+"/", nil)
		if host != "" {
			req.Host = host
		}
		resp, err := adminClient.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	testkit.Eventually(t, 30*time.Second, "the app through its sidecar", func() bool { return get("") == "200 hello from app" })
	if got := get("catalog"); got != "200 hello from catalog-1" {
		t.Errorf("outbound call through the sidecar: %q", got)
	}
	// Mutating admin calls need the token off loopback.
	url := admin + "/api/v1/upstreams/catalog/backends/catalog-1:8080/drain"
	resp, err := adminClient.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("drain without a token: %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err = adminClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("drain with the token: %d, want 200", resp.StatusCode)
	}
}
