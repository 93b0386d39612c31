#!/usr/bin/env bash
# End to end on a real cluster: a kind cluster with a Tekton Pipelines release, the Wait
# controller built into an image and deployed with examples/wait/config, a smoke run of
# examples/wait/pipelinerun.yaml, then the e2e suite (tests/e2e) against that cluster.
#
# For machines WITH a Docker engine (kind runs its nodes as containers). It cannot run
# where there is no Docker daemon, such as the development sandbox: there, use
# `bash hack/test.sh`, which tests against a local control plane instead.
#
# Needs: docker (with a running engine), kind, kubectl, and .venv with the dev extras
# (`bash hack/setup.sh`, or `python3 -m venv .venv && .venv/bin/pip install
# -c hack/constraints.txt -e '.[dev]'`). Nothing outside a temporary folder is written:
# the cluster's kubeconfig is its own file (~/.kube/config is not touched) and the
# deployment overrides its image through a temporary kustomize overlay.
#
# The e2e suite is pointed at the cluster through CUSTOMTASK_SDK_KUBECONFIG: the pytest
# plugin then uses that cluster instead of a local control plane, the deployed controller
# serves the runs, and tests that need to kill local processes are skipped.
#
# Settings (environment):
#   CLUSTER_NAME    kind cluster name                     (customtask-wait-e2e)
#   KIND_NODE_IMAGE kind node image, e.g. kindest/node:v1.33.1 (kind's default)
#   TEKTON_VERSION  Tekton Pipelines release              (v1.15.1, as testbin's Versions.tekton)
#   IMAGE           the Wait controller image to build    (customtask-sdk/wait-controller:e2e)
#   KEEP_CLUSTER=1  keep the cluster afterwards (its kubeconfig path is printed)
#   SKIP_BUILD=1    do not build IMAGE (it must exist locally)
# Extra arguments go to pytest, e.g. `bash hack/e2e-kind.sh -k matrix`.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_NAME=${CLUSTER_NAME:-customtask-wait-e2e}
TEKTON_VERSION=${TEKTON_VERSION:-v1.15.1}
IMAGE=${IMAGE:-customtask-sdk/wait-controller:e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
TEKTON_RELEASE="https://infra.tekton.dev/tekton-releases/pipeline/previous/${TEKTON_VERSION}/release.yaml"
PLACEHOLDER_IMAGE=ghcr.io/customtask-sdk/wait-controller
CONTROLLER_NAMESPACE=customtask-wait
SMOKE_NAMESPACE=wait-smoke

log() { printf 'e2e-kind: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (https://kind.sigs.k8s.io/docs/user/quick-start/)"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed); kind needs one"
[ -x .venv/bin/pytest ] || die ".venv/bin/pytest not found: run bash hack/setup.sh first"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/customtask-e2e.XXXXXX")
kubeconfig="$workdir/kubeconfig"
created_cluster=0

cleanup() {
  local code=$?
  set +e
  if [ "$code" -ne 0 ] && [ "$created_cluster" = 1 ]; then
    log "failed (exit $code); Wait controller logs:"
    kubectl --kubeconfig "$kubeconfig" -n "$CONTROLLER_NAMESPACE" logs \
      -l app.kubernetes.io/name=wait-controller --all-containers --prefix --tail=100 >&2
    kubectl --kubeconfig "$kubeconfig" -n "$CONTROLLER_NAMESPACE" get pods -o wide >&2
  fi
  if [ "$created_cluster" = 1 ]; then
    if [ "$KEEP_CLUSTER" = 1 ]; then
      log "keeping cluster $CLUSTER_NAME: export KUBECONFIG=$kubeconfig"
      log "delete it with: kind delete cluster --name $CLUSTER_NAME"
    else
      log "deleting cluster $CLUSTER_NAME"
      kind delete cluster --name "$CLUSTER_NAME" >&2
    fi
  fi
  if [ "$KEEP_CLUSTER" != 1 ]; then
    rm -rf "$workdir"
  fi
  exit "$code"
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  die "a kind cluster named $CLUSTER_NAME exists already; delete it or set CLUSTER_NAME"
fi

log "creating kind cluster $CLUSTER_NAME"
node_image=()
if [ -n "${KIND_NODE_IMAGE:-}" ]; then
  node_image=(--image "$KIND_NODE_IMAGE")
fi
created_cluster=1
kind create cluster --name "$CLUSTER_NAME" --kubeconfig "$kubeconfig" --wait 180s \
  ${node_image[@]+"${node_image[@]}"}
export KUBECONFIG="$kubeconfig"

log "installing Tekton Pipelines $TEKTON_VERSION"
kubectl apply -f "$TEKTON_RELEASE"
for ns in tekton-pipelines tekton-pipelines-resolvers; do
  kubectl -n "$ns" wait --for=condition=Available deployment --all --timeout=300s
done

if [ "$SKIP_BUILD" != 1 ]; then
  log "building $IMAGE"
  docker build -f examples/Dockerfile --target wait -t "$IMAGE" .
fi
log "loading $IMAGE into the cluster"
kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"

log "deploying the Wait controller (examples/wait/config, image $IMAGE)"
# An overlay in the temporary folder sets the image, so the repository is not modified.
mkdir -p "$workdir/overlay"
cp -R examples/wait/config "$workdir/overlay/base"
image_name=${IMAGE%:*}
image_tag=${IMAGE##*:}
if [ "$image_name" = "$IMAGE" ] || [[ "$image_tag" == */* ]]; then
  image_name=$IMAGE  # no tag given
  image_tag=latest
fi
cat >"$workdir/overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - base
images:
  - name: $PLACEHOLDER_IMAGE
    newName: $image_name
    newTag: "$image_tag"
YAML
kubectl apply -k "$workdir/overlay"
kubectl -n "$CONTROLLER_NAMESPACE" rollout status deployment/wait-controller --timeout=180s

log "smoke test: examples/wait/pipelinerun.yaml"
kubectl create namespace "$SMOKE_NAMESPACE"
kubectl -n "$SMOKE_NAMESPACE" apply -f examples/wait/pipelinerun.yaml
if ! kubectl -n "$SMOKE_NAMESPACE" wait --for=condition=Succeeded pipelinerun/wait-demo --timeout=180s; then
  kubectl -n "$SMOKE_NAMESPACE" get pipelineruns,customruns -o wide >&2
  die "the sample PipelineRun did not succeed"
fi
kubectl -n "$SMOKE_NAMESPACE" get customruns

log "running tests/e2e against the cluster (CUSTOMTASK_SDK_KUBECONFIG=$kubeconfig)"
export CUSTOMTASK_SDK_KUBECONFIG="$kubeconfig"
.venv/bin/pytest tests/e2e "$@"
log "passed"
