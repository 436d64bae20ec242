# The catalog service's instances, registered with their container names:
# kelpie resolves them through Docker's DNS. Consul checks them too.
services = [
  { id = "catalog-1", name = "catalog", address = "catalog-1", port = 8080,
    check = { http = "http://catalog-1:8080/health", interval = "2s", timeout = "1s" } },
  { id = "catalog-2", name = "catalog", address = "catalog-2", port = 8080,
    check = { http = "http://catalog-2:8080/health", interval = "2s", timeout = "1s" } },
  { id = "catalog-3", name = "catalog", address = "catalog-3", port = 8080,
    check = { http = "http://catalog-3:8080/health", interval = "2s", timeout = "1s" } },
]
