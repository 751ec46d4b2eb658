# The control plane, waitstate-control, as a small non-root image.
#
#   docker build -t waitstate-control .
#   docker run --rm -p 7700:7700 -v "$PWD/waitstate-control/waitstate-control.example.toml:/etc/waitstate/waitstate-control.toml:ro" waitstate-control
#
# Build arguments: FEATURES (e.g. "redis" for shared fleet state across replicas).

# ---- build: the workspace's toolchain, the control plane only, with the lock file ----
FROM rust:1-slim-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p waitstate-control --bin waitstate-control \
        ${FEATURES:+--features "$FEATURES"} \
    && cp target/release/waitstate-control /waitstate-control

# ---- run: glibc and CA certificates only, no shell, no package manager, not root ----
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /waitstate-control /usr/local/bin/waitstate-control
USER nonroot:nonroot
EXPOSE 7700
# The config must listen on 0.0.0.0:7700 inside the container (the default is loopback):
# waitstate-control/waitstate-control.example.toml does.
ENTRYPOINT ["/usr/local/bin/waitstate-control"]
CMD ["--config", "/etc/waitstate/waitstate-control.toml"]
