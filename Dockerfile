# kelpie's image: a static binary and CA certificates on scratch. It copies a
# binary built on the host (`make image` builds it with CGO_ENABLED=0), the
# way release tooling for Go images does, so building needs no registry and
# no base image. README shows a multi-stage variant that builds from source.
#
#   make image                  # kelpie:<version> and kelpie:latest
#   docker run -v "$PWD/conf:/etc/kelpie:ro" -p 8080:8080 kelpie:latest run -watch
#
# Build context (tools/image.sh assembles it): kelpie, ca-certificates.crt.
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="kelpie" \
      org.opencontainers.image.description="health-aware HTTP/1.1 load balancer" \
      org.opencontainers.image.version="${VERSION}"
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY kelpie /kelpie
# The config is a mounted directory (editors and Kubernetes replace the file,
# so mount /etc/kelpie, not the file); `run` reads $KELPIE_CONFIG when
# -config is not given.
ENV KELPIE_CONFIG=/etc/kelpie/kelpie.yaml
# No passwd file on scratch: a numeric non-root UID:GID (distroless's nonroot).
USER 65532:65532
# Proxy and admin ports of the usual container config (listen: ":8080",
# admin.listen: ":9901" with a token).
EXPOSE 8080 9901
# Exec form: there is no shell. /healthz answers while the process serves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/kelpie", "probe", "-q", "-timeout", "2s", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/kelpie"]
CMD ["run"]
