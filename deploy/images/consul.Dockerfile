# A Consul agent for the examples and the container tests, from the static
# binary tools/consul builds (CGO_ENABLED=0); no registry needed. Dev mode:
# in-memory, single node, not for production.
FROM scratch
COPY consul /bin/consul
USER 65532:65532
EXPOSE 8500
ENTRYPOINT ["/bin/consul"]
CMD ["agent", "-dev", "-client", "0.0.0.0", "-log-level", "warn"]
