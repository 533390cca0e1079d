# syntax=docker/dockerfile:1.7
# The coordinator (serve, ca init, ca issue): `flotilla-coordinator`.
# Build from the repository root (the build context is the workspace):
#   docker build -f deploy/docker/flotilla-coordinator.Dockerfile -t ghcr.io/flotilla/flotilla-coordinator:0.1.0 .
# TLS is rustls with ring throughout (no OpenSSL), so the runtime needs only glibc and libgcc:
# distroless/cc, no shell, running as its `nonroot` user (65532), as the Helm chart expects.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is copied out
# of the cached target directory, which does not outlive this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p flotilla-coordinator --bin flotilla-coordinator \
 && install -D -m 0755 target/release/flotilla-coordinator /out/flotilla-coordinator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/flotilla/flotilla" \
      org.opencontainers.image.title="flotilla-coordinator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/flotilla-coordinator /usr/local/bin/flotilla-coordinator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flotilla-coordinator"]
