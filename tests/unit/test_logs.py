"""Controller logs: JSON lines or text, both carrying the run key."""

from __future__ import annotations

import json
import logging

import pytest

from customtask_sdk.runtime import configure_logging

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_json_lines_carry_the_run_key_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    log = logging.getLogger("customtask_sdk.controller")
    log.info("run finished: %s", "DurationElapsed", extra={"run": "ns/w-1"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("reconcile failed", extra={"run": "ns/w-2"})
    log.debug("hidden")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["msg"] == "run finished: DurationElapsed"
    assert first["run"] == "ns/w-1"
    assert first["level"] == "info"
    assert first["logger"] == "customtask_sdk.controller"
    assert first["ts"].endswith("Z")
    assert second["run"] == "ns/w-2"
    assert "ValueError: boom" in second["error"]


def test_text_lines_end_with_the_run_key(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "WARNING")
    log = logging.getLogger("customtask_sdk.controller")
    log.info("not shown", extra={"run": "ns/x"})
    log.warning("will retry", extra={"run": "ns/w-3"})
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("will retry [run=ns/w-3]")
    assert "WARNING" in line
