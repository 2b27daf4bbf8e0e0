# The mailbox-gateway container image: a release build on the official Rust image, run on distroless.
#
#   docker build -t mailbox-gateway .
#   docker run --rm -p 8080:8080 mailbox-gateway serve --simulate --listen 0.0.0.0:8080   # the demo
#
# The image listens on 0.0.0.0:8080, which the gateway accepts only with client authentication
# configured (MAILBOX_GATEWAY_AUTH and its keys, see docs/configuration.md) or with --simulate
# (the built-in simulator, for demos). Without either, `serve` refuses to start and says what to set.
#
# Shutdown: SIGTERM makes the gateway report not ready, stop accepting connections and give in-flight
# imports MAILBOX_GATEWAY_SHUTDOWN_GRACE_SECS (30 by default) to finish. Whatever stops the container
# must wait longer than that before it kills: `docker stop -t 45` or `docker run --stop-timeout 45`
# (Docker's own default is 10 seconds), terminationGracePeriodSeconds: 45 on Kubernetes.
#
# No HEALTHCHECK: the runtime image has no shell or curl to run one. Orchestrators probe GET /healthz
# (liveness) and GET /readyz (readiness) themselves (deploy/kubernetes/deployment.yaml).

FROM rust:1-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml or Cargo.lock change,
# not on every edit of the sources. Stand-ins give cargo the crate's library and binary, and every other
# target that Cargo.toml declares must exist as a file too, or cargo refuses the manifest: the load
# generator example stays a stand-in (it is not built; .ci/lint-deploy checks that each declared target
# has one here). The workspace's other member, the simulator crate, gets a stand-in library too.
COPY Cargo.toml Cargo.lock ./
COPY simulator/Cargo.toml ./simulator/
RUN mkdir src examples simulator/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs simulator/src/lib.rs \
    && echo 'fn main() {}' > examples/bench.rs \
    && cargo build --release --locked \
    && rm -rf src simulator/src

# The real sources. openapi.yaml is compiled in (include_str!) and samples/ is named through
# CARGO_MANIFEST_DIR, so both are part of the build. COPY keeps the files' own modification times,
# which may be older than the stand-ins': the crate's own build outputs are removed so that cargo
# cannot take the stand-in build for an up-to-date one.
COPY openapi.yaml ./
COPY samples ./samples
COPY src ./src
COPY simulator/src ./simulator/src
RUN rm -rf target/release/.fingerprint/mailbox-gateway-* \
           target/release/deps/mailbox_gateway-* \
           target/release/deps/libmailbox_gateway-* \
           target/release/.fingerprint/exchange-simulator-* \
           target/release/deps/exchange_simulator-* \
           target/release/deps/libexchange_simulator-* \
    && cargo build --release --locked \
    && cp target/release/mailbox-gateway /usr/local/bin/mailbox-gateway

# glibc and libgcc for the Rust binary, CA certificates, no shell, no package manager. The :nonroot
# variant's user is uid/gid 65532; it is named by number so that Kubernetes' runAsNonRoot can check it.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/mailbox-gateway /usr/local/bin/mailbox-gateway
USER 65532:65532
ENV MAILBOX_GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mailbox-gateway"]
CMD ["serve"]
