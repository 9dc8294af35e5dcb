# The simulator alone, for running swarm shards on a cluster (deploy/k8s/).
#   docker build -f deploy/sim.Dockerfile -t mta-sim .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p sim --bin mta-sim

FROM debian:bookworm-slim
COPY --from=build /src/target/release/mta-sim /usr/local/bin/mta-sim
ENTRYPOINT ["/usr/local/bin/mta-sim"]
