"""Read a Pipeline-in-Pod Pod back: each task's state, its results, the run's outcome.

Pure: the compiled :class:`~examples.pipeline_in_pod.compiler.Plan` and the Pod's status in,
per-task status (bounded) and a verdict out. A step's termination message is what Tekton's
entrypoint writes: ``[{"key", "value", "type"}]`` (type 1: a task result, 3: internal such
as ``StartedAt`` and ``Reason``: Skipped, Cancelled, TimeoutExceeded).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from examples.pipeline_in_pod.compiler import (
    BARRIER_CONTAINER,
    SCHEDULER_CONTAINER,
    Plan,
    TaskPlan,
)
from examples.pipeline_in_pod.hermetic import CHECK_CONTAINER, UNAVAILABLE, unavailable
from examples.pipeline_in_pod.model import ParamValue

__all__ = ["FATAL_WAITING", "PodView", "Verdict", "aggregate", "read_pod"]

JSON = dict[str, Any]

#: Waiting reasons no wait will cure: the run fails with the cause, not at its timeout.
FATAL_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImageNeverPull",
    "RunContainerError",
}
#: A kubelet's own pull rate limit (``registryPullQPS``): it pulls again after a back-off,
#: so a Pod of many containers pulling ``:latest`` images is not failed for it.
TRANSIENT_PULL = "pull QPS exceeded"


def fatal_waiting(waiting: JSON) -> bool:
    """Whether a container's ``waiting`` state is one no wait will cure."""
    reason = waiting.get("reason", "")
    return reason in FATAL_WAITING and TRANSIENT_PULL not in (waiting.get("message") or "")


#: Longest value of a result kept in a task's status (the run's results are whole).
MAX_SHOWN = 256
#: ``$(tasks.<t>.results.<r>)``, and ``$(finally.<t>.results.<r>)`` (a finally task's, in
#: pipeline results, as Tekton spells it).
_RESULT_REF = re.compile(
    r"\$\((?:tasks|finally)\.([a-z0-9][-a-z0-9]*)\.results\.([^)\[.]+)(\[\*\])?\)"
)


@dataclass(frozen=True)
class Verdict:
    """How the run ends: ``succeeded``, a reason and message, and the pipeline results."""

    succeeded: bool
    reason: str
    message: str
    results: Mapping[str, ParamValue] = field(default_factory=dict)


@dataclass(frozen=True)
class PodView:
    """What the controller reads of a Pod: each task's status, and the verdict once done;
    ``results``: each task's results, whole."""

    tasks: list[JSON]
    verdict: Verdict | None
    steps_done: bool
    results: Mapping[str, Mapping[str, ParamValue]] = field(default_factory=dict)


def _termination(state: JSON) -> tuple[dict[str, ParamValue], dict[str, str], bool]:
    """A terminated container's task results and internal keys; False: unreadable."""
    message = state.get("message") or ""
    if not message:
        return {}, {}, True
    try:
        entries = json.loads(message)
    except ValueError:
        return {}, {}, False
    results: dict[str, ParamValue] = {}
    internal: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        key, value, kind = entry.get("key"), entry.get("value", ""), entry.get("type")
        if kind == 3:
            internal[key] = value
        elif kind == 1:
            results[key] = _result_value(value)
    return results, internal, True


def _result_value(text: str) -> ParamValue:
    """A result as Tekton reads it: a JSON array or object when it parses as one."""
    if text[:1] in "[{":
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
            return parsed
        if isinstance(parsed, dict) and all(isinstance(v, str) for v in parsed.values()):
            return parsed
    return text


def _shown(value: ParamValue) -> ParamValue:
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) <= MAX_SHOWN:
        return value
    return text[:MAX_SHOWN] + f"... ({len(text)} bytes)"


def _task_state(
    task: TaskPlan,
    statuses: Mapping[str, JSON],
    states: Mapping[str, str],
    pod: JSON,
    timed_out: bool,
) -> tuple[JSON, dict[str, ParamValue]]:
    meta = pod.get("metadata", {})
    entry: JSON = {"name": task.name}
    if task.is_finally:
        entry["finally"] = True
    if task.skipped is not None:
        entry.update(state="skipped", reason=task.skipped)
        return entry, {}
    steps: list[JSON] = []
    results: dict[str, ParamValue] = {}
    state, reason, message = "", "", ""
    started = finished = None
    terminated = 0
    skipped_steps = 0
    for plan in task.steps:
        status = statuses.get(plan.container) or {}
        current = status.get("state") or {}
        step: JSON = {"name": plan.name, "container": plan.container}
        if plan.phase != "steps":
            step["phase"] = plan.phase
        if plan.hermetic:
            step["hermetic"] = True
        if "waiting" in current:
            why = current["waiting"].get("reason", "")
            step["waiting"] = why
            if fatal_waiting(current["waiting"]) and not state:
                state, reason = "failed", why
                message = f"step {plan.name!r}: {why}: {current['waiting'].get('message', '')}"
        elif "terminated" in current:
            done = current["terminated"]
            terminated += 1
            code = done.get("exitCode", 0)
            own, internal, readable = _termination(done)
            results.update(own)
            step["exitCode"] = code
            why = internal.get("Reason") or done.get("reason", "")
            step["reason"] = why
            started = started or internal.get("StartedAt") or done.get("startedAt")
            finished = done.get("finishedAt") or finished
            if why == "Skipped":
                skipped_steps += 1
                if code != 0 and terminated == 1 and not state:
                    state, reason = "skipped", "ParentTasksFailed"
            elif why == "TimeoutExceeded" and not state:
                # The task's own timeout, or a step's (the TaskRun then just fails).
                by_task = task.timeout is not None
                state = "timedOut" if by_task else "failed"
                reason = "TaskRunTimeout" if by_task else "StepTimeout"
                message = f"step {plan.name!r} timed out"
            elif why == "Cancelled" and not state:  # by the controller: timeouts.tasks
                state, reason = (
                    ("timedOut", "TaskRunTimeout")
                    if timed_out
                    else ("cancelled", "TaskRunCancelled")
                )
            elif not readable and not state:
                state, reason = "failed", "TerminationMessageUnreadable"
                message = (
                    f"step {plan.name!r}: its results could not be read (a Pod keeps 12 KiB of "
                    "termination messages over all its containers, 4 KiB each)"
                )
            elif code != 0 and plan.on_error != "continue" and not state:
                state = "failed"
                reason = "OOMKilled" if done.get("reason") == "OOMKilled" else "Failed"
                message = f"step {plan.name!r} exited with code {code} ({done.get('reason', '')})"
            if code != 0 and why != "Skipped":
                namespace, pod_name = meta.get("namespace", ""), meta.get("name", "")
                step["logs"] = f"kubectl logs -n {namespace} {pod_name} -c {plan.container}"
        elif "running" in current:
            step["running"] = True
        steps.append(step)
    if not state:
        if terminated == len(task.steps):
            if skipped_steps == len(task.steps) and not task.steps[0].when:
                # The task's own when (a step's own when skips only the step, as Tekton)
                state, reason = "skipped", "WhenExpressionsEvaluatedFalse"
            else:
                state, reason = "succeeded", "Succeeded"
        elif (
            all(states.get(dep) in _ENDED for dep in task.deps)
            and (not task.is_finally or states.get(BARRIER_CONTAINER) == "done")
            and any("running" in s or "exitCode" in s for s in steps)
        ):
            state = "running"
        else:
            state = "pending"
    entry.update(state=state, reason=reason or state.capitalize())
    if message:
        entry["message"] = message[:512]
    if started:
        entry["startTime"] = started
    if finished and state not in ("running", "pending"):
        entry["completionTime"] = finished
    kept = {name: value for name, value in results.items() if name in task.results}
    if kept:
        entry["results"] = {name: _shown(value) for name, value in kept.items()}
    entry["steps"] = steps
    return entry, kept


_ENDED = {"succeeded", "failed", "skipped", "timedOut", "cancelled"}
_FAILED = {"failed", "timedOut", "cancelled"}


def aggregate(
    instances: Sequence[str], results: Mapping[str, Mapping[str, ParamValue]]
) -> dict[str, ParamValue]:
    """A matrix's results as Tekton aggregates them: each result an array of the values
    of the instances that produced it, in TaskRun-name order."""
    out: dict[str, list[str]] = {}
    for name in sorted(instances):
        for result, value in results.get(name, {}).items():
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            out.setdefault(result, []).append(text)
    return dict(out)


def pipeline_results(
    wanted: Mapping[str, ParamValue], results: Mapping[str, Mapping[str, ParamValue]]
) -> dict[str, ParamValue]:
    """The pipeline's results: each task result reference replaced; one whose references
    are missing (a skipped or failed task) is left out, as Tekton does."""
    out: dict[str, ParamValue] = {}
    for name, value in wanted.items():
        resolved = _resolve(value, results)
        if resolved is not None:
            out[name] = resolved
    return out


def _resolve(
    value: ParamValue, results: Mapping[str, Mapping[str, ParamValue]]
) -> ParamValue | None:
    if isinstance(value, list):
        items: list[str] = []
        for item in value:
            got = _resolve(item, results)
            if got is None:
                return None
            items.extend(got if isinstance(got, list) else [str(got)])
        return items
    if isinstance(value, dict):
        mapped: dict[str, str] = {}
        for key, item in value.items():
            got = _resolve(item, results)
            if not isinstance(got, str):
                return None
            mapped[key] = got
        return mapped
    whole = _RESULT_REF.fullmatch(value)
    if whole is not None:
        found = results.get(whole.group(1), {}).get(whole.group(2))
        return found
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        found = results.get(match.group(1), {}).get(match.group(2))
        if not isinstance(found, str):
            missing = True
            return ""
        return found

    text = _RESULT_REF.sub(replace, value)
    return None if missing else text


def read_pod(
    plan: Plan,
    pod: JSON,
    *,
    timed_out: bool = False,
    overlay: Callable[[JSON], None] | None = None,
) -> PodView:
    """Each task's status from ``pod``, and the verdict once every step has ended.

    ``timed_out``: the controller stopped the DAG's steps for ``timeouts.tasks`` (a step
    it cancelled timed out). ``overlay``: called on each task's entry before it counts
    (a custom task's entry tells its CustomRun's story)."""
    status = pod.get("status") or {}
    statuses = {c["name"]: c for c in status.get("containerStatuses") or []}
    states: dict[str, str] = {}
    for helper in (SCHEDULER_CONTAINER, BARRIER_CONTAINER):
        ended = statuses.get(helper, {}).get("state", {}).get("terminated")
        if ended is None:
            continue
        states[helper] = "done"
        if ended.get("exitCode"):  # the tasks it releases would wait forever: say so now
            meta = pod.get("metadata", {})
            why = (
                f"{helper} failed: kubectl logs -n "
                f"{meta.get('namespace', '')} {meta.get('name', '')} -c {helper}"
            )
            return PodView([], Verdict(False, "HelperFailed", why), False)
    tasks: list[JSON] = []
    results: dict[str, dict[str, ParamValue]] = {}
    for task in plan.tasks:
        entry, kept = _task_state(task, statuses, states, pod, timed_out)
        if overlay is not None:
            overlay(entry)
        states[task.name] = entry["state"]
        results[task.name] = kept
        if task.name in plan.children:
            if entry.get("reason") in FATAL_WAITING:
                tasks.append(entry)  # a child's end is no task of the pipeline, unless it broke
        elif task.name not in plan.matrices or entry["state"] == "failed":
            tasks.append(entry)  # a matrix's join is no task of the pipeline, unless it broke
    for matrix, instances in plan.matrices.items():
        results[matrix] = aggregate(instances, results)
    steps_done = all(states[task.name] in _ENDED for task in plan.tasks)
    fatal = next((t for t in tasks if t.get("reason") in FATAL_WAITING), None)
    if fatal is not None:
        verdict = Verdict(False, fatal["reason"], f"task {fatal['name']!r}: {fatal['message']}")
        return PodView(tasks, verdict, steps_done, results)
    init = _init_failure(pod, plan)
    if init is not None:
        return PodView(tasks, init, steps_done, results)
    unschedulable = _unschedulable(status)
    if unschedulable is not None:
        verdict = Verdict(False, "PodUnschedulable", unschedulable)
        return PodView(tasks, verdict, steps_done, results)
    if status.get("phase") == "Failed" and not steps_done:
        why = status.get("reason") or "PodFailed"
        verdict = Verdict(False, why, status.get("message") or why)
        return PodView(tasks, verdict, steps_done, results)
    if not steps_done:
        return PodView(tasks, None, False, results)
    return PodView(tasks, _verdict(plan, tasks, results), True, results)


def _init_failure(pod: JSON, plan: Plan) -> Verdict | None:
    """An init container (``prepare``, ``place-scripts``, a hermetic check) that cannot
    run or failed."""
    meta = pod.get("metadata", {})
    for container in (pod.get("status") or {}).get("initContainerStatuses") or []:
        state = container.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason", "")
        code = (state.get("terminated") or {}).get("exitCode", 0)
        name = container["name"]
        if fatal_waiting(state.get("waiting") or {}):
            message = (state["waiting"].get("message") or "")[:512]
            return Verdict(False, waiting, f"init container {name!r}: {message}")
        if code and name.startswith(CHECK_CONTAINER):
            return Verdict(False, UNAVAILABLE, unavailable(meta, plan.pod_spec, name))
        if code:
            logs = f"kubectl logs -n {meta.get('namespace', '')} {meta.get('name', '')} -c {name}"
            return Verdict(False, "InitFailed", f"init container {name!r} exited {code}: {logs}")
    return None


#: The scheduler waits for a claim being bound (a volumeClaimTemplate's, just made).
_CLAIM_PENDING = "unbound immediate PersistentVolumeClaims"


def _unschedulable(status: JSON) -> str | None:
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
            and _CLAIM_PENDING not in cond.get("message", "")
        ):
            return f"the Pod cannot be scheduled: {cond.get('message', '')}"
    return None


def _verdict(
    plan: Plan, tasks: Sequence[JSON], results: Mapping[str, Mapping[str, ParamValue]]
) -> Verdict:
    failed = [t for t in tasks if t["state"] in _FAILED]
    skipped = [t for t in tasks if t["state"] == "skipped"]
    done = len(tasks) - len(skipped)
    counts = f"Tasks Completed: {done} (Failed: {len(failed)}), Skipped: {len(skipped)}"
    if failed:
        first = failed[0]
        detail = first.get("message") or first["reason"]
        message = f"{counts}; task {first['name']!r} failed: {detail}"
        # Tekton publishes what results it can resolve even when the pipeline fails.
        return Verdict(False, "Failed", message, pipeline_results(plan.results, results))
    reason = "Completed" if skipped else "Succeeded"
    return Verdict(True, reason, counts, pipeline_results(plan.results, results))
