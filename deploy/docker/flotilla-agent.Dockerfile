# syntax=docker/dockerfile:1.7
# The in-cluster agent: `flotilla-agent`.
# Build from the repository root (the build context is the workspace):
#   docker build -f deploy/docker/flotilla-agent.Dockerfile -t ghcr.io/flotilla/flotilla-agent:0.1.0 .
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
    cargo build --release --locked -p flotilla-agent --bin flotilla-agent \
 && install -D -m 0755 target/release/flotilla-agent /out/flotilla-agent

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/flotilla/flotilla" \
      org.opencontainers.image.title="flotilla-agent" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/flotilla-agent /usr/local/bin/flotilla-agent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flotilla-agent"]
