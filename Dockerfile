# syntax=docker/dockerfile:1
# countersign: Cedar ext_authz sidecar for Envoy.
#   docker build -t countersign .
# Needs BuildKit (the default since Docker 23) for the cache mounts.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the build reads: build.rs compiles proto/ with protox (no protoc);
# ring's and jemalloc's C parts use the image's gcc and make; rustls means no
# OpenSSL.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# Cache mounts keep the crate registry and compiled dependencies between
# builds; the binary is copied out because the target mount is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin countersign \
 && cp target/release/countersign /usr/local/bin/countersign

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="countersign" \
      org.opencontainers.image.description="Authorization sidecar for Envoy: Cedar policies, human approvals, OpenTelemetry audit trail" \
      org.opencontainers.image.licenses="Apache-2.0"
# CA roots for TLS to Redis (rediss://) or an OTLP collector; sh stays for
# wrapper commands such as the compose file's.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 countersign \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /srv/countersign \
      --shell /usr/sbin/nologin countersign
COPY --from=build /usr/local/bin/countersign /usr/local/bin/countersign
# The default config reads ./policies relative to the working directory;
# mount your own over it (or set COUNTERSIGN_POLICY_DIR).
WORKDIR /srv/countersign
COPY policies ./policies
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# ext_authz + gRPC health, admin API (TLS, off without certificates), metrics.
# All listen on 127.0.0.1 by default: a sidecar shares its proxy's network
# namespace. To reach them from another container set e.g.
# COUNTERSIGN_LISTEN=0.0.0.0:9191.
EXPOSE 9191 9192 9193
# SIGTERM: reports NOT_SERVING and drains for up to 30 s before exiting.
ENTRYPOINT ["countersign"]
CMD ["serve"]
