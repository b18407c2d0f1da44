#!/usr/bin/env bash
# Bring up a kind cluster for modeldeploy's e2e tests (tests/e2e):
#   1. create the kind cluster (or reuse it),
#   2. build the operator image (operator/Dockerfile) and each model service's image
#      (workloads/<svc>/Dockerfile, built from the repository root) and `kind load` them,
#   3. install kube-prometheus-stack (prometheus-operator, Prometheus, Grafana) at a pinned chart
#      version into `monitoring`, selecting every PodMonitor/ServiceMonitor/PrometheusRule,
#   4. install charts/modeldeploy into `modeldeploy-system` with the images just loaded.
#
# Needs docker (a running daemon), kind, kubectl and helm on PATH. Re-running it is safe: it
# reuses the cluster and upgrades both releases. tests/e2e runs it itself with E2E_KIND_UP=1.
#
# Environment (all optional):
#   KIND_CLUSTER      cluster name                                   (modeldeploy)
#   KIND_BIN          the kind binary                                (kind on PATH)
#   KIND_NODE_IMAGE   kindest/node image, e.g. kindest/node:v1.31.0  (kind's default)
#   IMAGE_TAG         tag of the images built and loaded             (dev)
#   SERVICES          model services to build                        (all of workloads/ with a Dockerfile)
#   KPS_VERSION       kube-prometheus-stack chart version            (65.1.1)
#
# Then: pytest tests/e2e -m e2e -v -rs   (pytest-kind finds the cluster by name)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cluster="${KIND_CLUSTER:-modeldeploy}"
tag="${IMAGE_TAG:-dev}"
kps_version="${KPS_VERSION:-65.1.1}"
context="kind-${cluster}"
kind="${KIND_BIN:-kind}"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }

for tool in docker "$kind" kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (needs docker, kind, kubectl, helm)"
done
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable"

cd "$repo"

say "kind cluster ${cluster}"
if "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
  echo "reusing the existing cluster"
else
  "$kind" create cluster --name "$cluster" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
fi
kubectl --context "$context" cluster-info >/dev/null

say "images (tag ${tag})"
images=("modeldeploy/operator:${tag}")
docker build -f operator/Dockerfile -t "modeldeploy/operator:${tag}" .
if [[ -n "${SERVICES:-}" ]]; then
  read -r -a services <<<"$SERVICES"
else
  services=()
  for dockerfile in workloads/*/Dockerfile; do
    [[ -e "$dockerfile" ]] && services+=("$(basename "$(dirname "$dockerfile")")")
  done
fi
for svc in "${services[@]}"; do
  [[ -f "workloads/${svc}/Dockerfile" ]] || die "workloads/${svc}/Dockerfile does not exist"
  build_args=()
  # kind nodes have no GPUs: textgen's CPU-only torch instead of several GB of CUDA.
  [[ "$svc" == textgen ]] && build_args+=(--build-arg "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
  docker build "${build_args[@]}" -f "workloads/${svc}/Dockerfile" -t "modeldeploy/${svc}:${tag}" .
  images+=("modeldeploy/${svc}:${tag}")
done
"$kind" load docker-image --name "$cluster" "${images[@]}"

say "kube-prometheus-stack ${kps_version} in monitoring"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
helm upgrade --install kps prometheus-community/kube-prometheus-stack \
  --kube-context "$context" --namespace monitoring --create-namespace \
  --version "$kps_version" --wait --timeout 10m \
  --set alertmanager.enabled=false \
  --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.scrapeInterval=15s \
  --set prometheus.prometheusSpec.evaluationInterval=15s

say "modeldeploy chart in modeldeploy-system"
helm upgrade --install modeldeploy charts/modeldeploy \
  --kube-context "$context" --namespace modeldeploy-system --create-namespace \
  --wait --timeout 5m \
  --set image.tag="$tag" \
  --set image.pullPolicy=Never

say "ready"
echo "Prometheus: http://prometheus-operated.monitoring:9090 (in the cluster)"
echo "Run the e2e tests (without KUBECONFIG set, pytest-kind reaches the cluster by name):"
echo "  KIND_CLUSTER=${cluster} pytest tests/e2e -m e2e -v -rs"
