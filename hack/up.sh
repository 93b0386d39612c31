#!/usr/bin/env bash
# The main job: sets everything up, starts a local control plane (etcd, kube-apiserver,
# kube-controller-manager, Tekton's controller), applies the sample PipelineRun and shows
# its PipelineRun and CustomRuns as they change. As root it also starts a real node and
# adds a sample whose Tekton tasks run in Pods beside the Wait custom tasks, and a
# build-and-test Pipeline run in one Pod by the Pipeline-in-Pod controller, both as a
# PipelineInPod task of a PipelineRun and as a plain PipelineRun with `managedBy`.
# Extra arguments go to `customtask-sdk dev up` (e.g. --keep-running to keep the control
# plane up and use it with KUBECONFIG).
#   bash hack/up.sh --approval [--auto]   runs the Approval walk-through instead
#   (examples/approval/demo.py: a gate that alice and carol decide; --auto decides it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
if [ "${1:-}" = "--approval" ]; then
  shift
  exec .venv/bin/python -m examples.approval.demo "$@"
fi
controllers=(-c examples.wait.controller:Wait)
samples=(-f examples/wait/pipelinerun.yaml)
if [ "$(id -u)" = 0 ]; then
  # Tekton's tasks in real Pods, and a build-and-test Pipeline in one Pod (Pipeline-in-Pod,
  # its helper images the node's own: see customtask_sdk/testing/node.py, _build_images).
  eval "$(.venv/bin/python - <<'PY'
from customtask_sdk.testing.node import LOCAL_REGISTRY
from customtask_sdk.testing.testbin import PINNED
tekton = f"{LOCAL_REGISTRY}/tekton"
print(f"export PIP_ENTRYPOINT_IMAGE={tekton}/entrypoint:{PINNED.tekton}")
print(f"export PIP_NOP_IMAGE={tekton}/nop:{PINNED.tekton}")
print(f"export PIP_SHELL_IMAGE={LOCAL_REGISTRY}/busybox:latest")
PY
)"
  controllers+=(-c examples.pipeline_in_pod.controller:PipelineInPod)
  controllers+=(-c examples.pipeline_in_pod.delegated:DelegatedPipelineRun)
  samples+=(-f examples/wait/pipelinerun-node.yaml -f examples/pipeline_in_pod/pipelinerun.yaml)
  samples+=(-f examples/pipeline_in_pod/pipelinerun-delegated.yaml)
else
  echo "up: not root, so no node: only the Wait custom tasks run (Tekton tasks need Pods)"
fi
exec .venv/bin/customtask-sdk dev up "${controllers[@]}" "${samples[@]}" "$@"
