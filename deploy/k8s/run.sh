#!/usr/bin/env bash
# Run a sharded swarm campaign on the current Kubernetes context and merge it:
#   docker build -f deploy/sim.Dockerfile -t mta-sim .   (and push it where the cluster pulls)
#   bash deploy/k8s/run.sh
# The merge job's exit status is the campaign's verdict; its log holds the replay lines.
set -euo pipefail
cd "$(dirname "$0")"
kubectl delete job swarm-shards swarm-merge --ignore-not-found
kubectl apply -f swarm-shards.yaml
kubectl wait --for=condition=complete job/swarm-shards --timeout=24h
kubectl apply -f swarm-merge.yaml
kubectl wait --for=condition=complete job/swarm-merge --timeout=10m || true
kubectl logs job/swarm-merge
test "$(kubectl get job swarm-merge -o jsonpath='{.status.succeeded}')" = 1
