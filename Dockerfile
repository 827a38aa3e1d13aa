# MarketMux: one image with every binary (marketmux, mock-publisher, load-test).
#
#   docker build -t marketmux .
#   docker run --rm -p 8080:8080 marketmux dev --listen 0.0.0.0:8080

# --- build ---
FROM rust:1-bookworm AS build
# librdkafka is built from source by rdkafka-sys; sqlite is bundled by sqlx.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config python3 zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p marketmux -p mock-publisher -p load-test \
 && mkdir -p /out \
 && cp target/release/marketmux target/release/mock-publisher target/release/load-test /out/

# --- run ---
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/marketmux --create-home marketmux
COPY --from=build /out/ /usr/local/bin/
USER marketmux
WORKDIR /var/lib/marketmux
EXPOSE 8080 50051
ENV RUST_LOG=info MARKETMUX_LOG_FORMAT=json
ENTRYPOINT ["marketmux"]
CMD ["dev", "--listen", "0.0.0.0:8080"]
