# syntax=docker/dockerfile:1.7
#
# The service image: the `challenge-latam-api` binary on a distroless, non-root runtime.
#
#   docker build -t challenge-latam-api \
#     --build-arg VERSION="$(git describe --tags --always)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Stages:
#   chef     the Rust toolchain plus cargo-chef (a layer that changes only with the base image)
#   planner  reduces the workspace to its manifests and lock file (recipe.json)
#   builder  compiles the dependencies from the recipe alone, so that layer stays cached while
#            only src/ changes, then compiles the service itself
#   runtime  glibc + libgcc + CA certificates, no shell, no package manager, uid 65532
#
# Base images are pinned by tag *and* digest so that a build is reproducible and a re-pushed tag
# cannot change what ships; Dependabot (.github/dependabot.yml) proposes digest bumps weekly.
# To check a digest by hand: `docker buildx imagetools inspect <image>:<tag>`.
# The builder is Debian 12 (bookworm) like the runtime, so the binary never links against a
# newer glibc than the one it runs on.

FROM rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS chef
WORKDIR /build
# cargo-chef at an exact version; --locked uses its own Cargo.lock, so the tool is reproducible too.
RUN cargo install cargo-chef --version 0.1.77 --locked

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
# Build settings that change how dependencies compile (SQLite's flush call, .cargo/config.toml).
COPY .cargo .cargo
# Dependencies only: this layer is rebuilt when Cargo.toml or Cargo.lock change, not for src/.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      --package challenge-latam-api --bin challenge-latam-api
COPY . .
# The image gets the binary without its DWARF line tables (160 MB -> 31 MB here); the symbol
# table stays, so panics and profiles still name functions. The full binary stays in this stage
# (`docker build --target builder`) for symbolizing.
RUN cargo build --release --locked --package challenge-latam-api --bin challenge-latam-api \
 && install -d -m 0750 /out/data \
 && objcopy --strip-debug target/release/challenge-latam-api /out/challenge-latam-api

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f AS runtime

ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
# The repository URL; the workflows pass ${{ github.server_url }}/${{ github.repository }}.
ARG SOURCE=""

# OCI image annotations (https://specs.opencontainers.org/image-spec/annotations/).
LABEL org.opencontainers.image.title="challenge-latam-api" \
      org.opencontainers.image.description="Ingests records through Pub/Sub into BigQuery and reads them back over HTTP." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /out/challenge-latam-api /usr/local/bin/challenge-latam-api
# The local default keeps its broker and store under DATA_DIR; owned by the runtime user so that
# `docker run` works without a volume. Cloud Run sets BACKEND=gcp and never writes here.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/challenge-latam-api

ENV PORT=8080 \
    ADMIN_PORT=9464 \
    DATA_DIR=/var/lib/challenge-latam-api \
    LOG_FORMAT=json

# 8080 serves the API; 9464 serves /metrics to the sidecar agent and is not exposed by Cloud Run.
EXPOSE 8080 9464
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/challenge-latam-api"]
