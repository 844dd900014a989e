# Multi-stage build: compile in the Rust image, run as a non-root user in a slim Debian image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tollgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /etc/tollgate tollgate
WORKDIR /etc/tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
# Every file gateway.yaml names: tests/docker_image.rs lays out exactly these COPY lines and runs
# `tollgate check` on them, so a file added to gateway.yaml but not here fails the tests.
COPY gateway.yaml ./gateway.yaml
COPY users.yaml ./users.yaml
COPY api-definitions ./api-definitions
# The signing key is generated on first start into keys/ (mount a volume there to keep it).
RUN mkdir -p keys && chown tollgate:tollgate keys
USER tollgate
EXPOSE 8080 8081
ENV TOLLGATE_CONFIG=/etc/tollgate/gateway.yaml
# The admin API must be reachable through a published port, so inside the container it listens on
# every interface. A non-loopback admin listener refuses the quick-start secret: the container starts
# only with `-e TOLLGATE_ADMIN_SECRET=...` (a real secret), and says so when it is missing.
ENV TOLLGATE_ADMIN_LISTEN=0.0.0.0:8081
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["run"]
