"""``python -m examples.pipeline_in_pod compile``: the Pod a Pipeline file compiles to."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from examples.pipeline_in_pod.__main__ import main

SAMPLE = Path(__file__).parents[2] / "examples" / "pipeline_in_pod" / "pipelinerun.yaml"


def test_compile_prints_the_pod_of_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(SAMPLE), "-p", "revision=v9"]) == 0
    pod = yaml.safe_load(capsys.readouterr().out)
    names = [c["name"] for c in pod["containers"]]
    assert names == [
        "step-compile-build",
        "step-unit-tests-unnamed-0",
        "step-lint-unnamed-0",
        "step-package-unnamed-0",
        "pip-scheduler",
        "pip-finally-barrier",
        "step-report-unnamed-0",
    ]


def test_compile_names_the_field_of_what_one_pod_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {
            "tasks": [
                {
                    "name": "t",
                    "retries": 1,
                    "taskSpec": {"steps": [{"image": "b", "command": ["x"]}]},
                }
            ]
        },
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    assert main(["compile", str(path)]) == 1
    assert capsys.readouterr().err.startswith("Unsupported: tasks[t].retries: ")


def test_compile_puts_an_embedded_child_pipelines_tasks_in_the_pod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = {"image": "b", "command": ["x"]}
    child = {"tasks": [{"name": "x", "taskSpec": {"steps": [step]}}]}
    pipeline = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {"tasks": [{"name": "c", "pipelineSpec": child}]},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    assert main(["compile", str(path)]) == 0
    pod = yaml.safe_load(capsys.readouterr().out)
    # The child's end (its barrier and outcome), then its task.
    assert [c["name"] for c in pod["containers"]] == ["step-c-end", "step-c-x-unnamed-0"]
