"""What integrators import: the package's public names, the docs' imports, and the offline
testing helpers without the ``[testing]`` extra."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import customtask_sdk
from customtask_sdk import reconciler, testing

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_exports_what_an_integrator_needs() -> None:
    assert sorted(customtask_sdk.__all__) == sorted(
        [
            "CANCELLED",
            "DEFAULT_TIMEOUT",
            "TIMED_OUT",
            "ApiError",
            "Clock",
            "ConflictError",
            "Failed",
            "ForbiddenError",
            "GoDuration",
            "GoneError",
            "InvalidError",
            "KubeClient",
            "LeaderElection",
            "Manager",
            "NoParams",
            "NotFoundError",
            "Object",
            "ObjectReconciler",
            "Outcome",
            "Owned",
            "Params",
            "PIPELINE_RUNS",
            "Reconciler",
            "Resource",
            "Result",
            "RetryLater",
            "Run",
            "RunFailed",
            "Running",
            "ServerError",
            "Succeeded",
            "TASK_RUNS",
            "TooManyRequestsError",
            "__version__",
        ]
    )
    for error in ("ConflictError", "ForbiddenError", "NotFoundError", "ServerError"):
        assert issubclass(getattr(customtask_sdk, error), customtask_sdk.ApiError)


def test_testing_exports_the_helpers_the_docs_use() -> None:
    assert {"FakeClock", "Harness", "running", "create_custom_run", "ControlPlane"} <= set(
        testing.__all__
    )


def test_lifecycle_internals_are_not_part_of_the_reconciler_api() -> None:
    internals = {"step", "Step", "Event", "is_done", "matches", "succeeded_condition"}
    assert internals.isdisjoint(reconciler.__all__)
    assert "InputError" not in reconciler.__all__


@pytest.mark.parametrize(
    "module",
    [
        "customtask_sdk",
        "customtask_sdk.reconciler",
        "customtask_sdk.testing",
        "customtask_sdk.client",
        "customtask_sdk.runtime",
    ],
)
def test_every_exported_name_imports(module: str) -> None:
    imported = importlib.import_module(module)
    for name in imported.__all__:
        assert getattr(imported, name) is not None, f"{module}.{name}"
    assert len(set(imported.__all__)) == len(imported.__all__)


def _doc_imports() -> list[tuple[str, str, str]]:
    """``(document, module, name)`` of every ``from customtask_sdk... import`` in a
    Python block of the docs, the README and the examples' READMEs."""
    documents = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/*/README.md")]
    found = []
    for document in documents:
        for block in re.findall(r"```python\n(.*?)```", document.read_text(), re.S):
            tree = compile(
                block, str(document), "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "customtask_sdk"
                ):
                    rel = document.relative_to(ROOT)
                    found += [(str(rel), node.module or "", alias.name) for alias in node.names]
    return found


def test_the_docs_show_imports() -> None:
    assert {(d, m) for d, m, _ in _doc_imports()} >= {("docs/testing.md", "customtask_sdk.testing")}


@pytest.mark.parametrize(("document", "module", "name"), _doc_imports())
def test_every_import_in_the_docs_works(document: str, module: str, name: str) -> None:
    imported = importlib.import_module(module)
    if not hasattr(imported, name):
        importlib.import_module(f"{module}.{name}")  # a submodule


# Runs in a fresh interpreter where the [testing] extra's modules cannot be imported.
_WITHOUT_EXTRA = """
import sys

class WithoutTestingExtra:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"cryptography", "pytest", "_pytest", "pytest_asyncio"}:
            raise ImportError(f"No module named {name!r} (the [testing] extra is absent)")
        return None

sys.meta_path.insert(0, WithoutTestingExtra())
"""


def _run_without_extra(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = _WITHOUT_EXTRA + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_offline_testing_helpers_import_without_the_testing_extra() -> None:
    result = _run_without_extra(
        """
        import asyncio
        from customtask_sdk.testing.clock import FakeClock
        from customtask_sdk.testing import FakeClock, Harness, condition, create_custom_run, running
        from examples.wait.controller import Wait

        run = Harness(Wait(FakeClock())).custom_run({"duration": "5s"})
        asyncio.run(run.run_until_done())
        print(run.reason)
        assert "cryptography" not in sys.modules and "pytest" not in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "DurationElapsed"


def test_the_guard_blocks_the_extra_for_the_control_plane() -> None:
    result = _run_without_extra("from customtask_sdk.testing import ControlPlane")
    assert result.returncode == 1
    assert "the [testing] extra is absent" in result.stderr  # the guard above did block it
