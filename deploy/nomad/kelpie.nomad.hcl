# kelpie as a Nomad job that registers with Consul: one allocation per
# client, its config rendered by a template (Nomad re-renders it when it
# changes and kelpie's -watch picks it up), a Consul service with an HTTP
# check on /readyz, and catalog's instances discovered from Consul.
#
#   nomad job run deploy/nomad/kelpie.nomad.hcl
#
# The image must be on each client (docker load), as nothing is pulled.
job "kelpie" {
  type = "service"

  group "kelpie" {
    count = 2

    network {
      port "http" { to = 8080 }
      port "admin" { to = 9901 }
    }

    service {
      name     = "kelpie"
      provider = "consul"
      port     = "http"

      check {
        type     = "http"
        port     = "admin"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "kelpie" {
      driver = "docker"

      config {
        image = "kelpie:latest"
        args  = ["run", "-watch"]
        ports = ["http", "admin"]
        # The config directory, not the file: templates replace the file.
        volumes = ["local/kelpie:/etc/kelpie"]
      }

      # readiness_delay + grace, plus a margin.
      kill_timeout = "45s"

      template {
        destination = "local/kelpie/kelpie.yaml"
        change_mode = "noop" # -watch reloads; no signal or restart needed
        data        = <<EOT
listen: ":8080"
admin:
  listen: ":9901"
  token_env: KELPIE_ADMIN_TOKEN
consul:
  address: "{{ env "attr.unique.network.ip-address" }}:8500"
shutdown:
  readiness_delay: 5s
  grace: 30s
upstreams:
  - name: catalog
    consul:
      service: catalog
    health:
      active:
        path: /health
        interval: 2s
        timeout: 1s
    timeouts:
      connect: 1s
      response: 5s
EOT
      }

      template {
        destination = "secrets/admin.env"
        env         = true
        data        = "KELPIE_ADMIN_TOKEN={{ with nomadVar \"nomad/jobs/kelpie\" }}{{ .admin_token }}{{ end }}"
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
