# The example and test backend (bench/cmd/backend) on scratch: one small
# fasthttp server. tools/example-images.sh builds it from a static binary.
FROM scratch
COPY backend /backend
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/backend"]
CMD ["-listen", ":8080"]
