"""StepActions: steps that ``ref`` a reusable ``StepAction``, resolved as Tekton v1.15.1 does.

Tekton's rules, each from its source:

- a step with ``ref`` may not set image, command, args, script, workingDir, env,
  volumeMounts or results; a step without may not set ``params``
  (``v1.Step.Validate``, same messages);
- a StepAction is valid as ``v1beta1.StepActionSpec.Validate`` says: an image, not both
  script and command, no ``$(params...)`` in its script (params reach a script through
  env), only declared params, volumeMount names a single ``$(params.x)``;
- the step's params must match the StepAction's: none extra, every param without a
  default given (``validateStepHasStepActionParameters``);
- substitution (``applyStepActionParameters``): the task's params into the step's params,
  then the step's params (else the defaults, which may reference other params) into the
  StepAction; a param whose value is a step result reference becomes that reference,
  read by the entrypoint when the step starts;
- merge (``resolveStepRef``): image, securityContext and workingDir are the StepAction's
  (even when it leaves them unset), command, args, script, env, volumeMounts and results
  the StepAction's when it sets them; the step keeps its name, timeout, onError, when,
  computeResources, imagePullPolicy, envFrom.

The StepActions a run uses are read once, when the run starts, and frozen with its
Pipeline and Tasks: compiling is pure (:func:`inline_step_actions`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from examples.pipeline_in_pod.dag import CompileError
from examples.pipeline_in_pod.model import (
    EnvVar,
    ParamSpec,
    ParamValue,
    Step,
    StepRef,
    TaskResult,
    TaskSpec,
)
from examples.pipeline_in_pod.substitution import Scope

__all__ = [
    "STEP_ACTION_VERSIONS",
    "StepActionSpec",
    "check_step_fields",
    "inline_step_actions",
    "ref_key",
    "step_action_refs",
    "validate_step_action",
]

#: The API versions a StepAction is served in (the same schema; Tekton reads v1beta1).
STEP_ACTION_VERSIONS = ("tekton.dev/v1beta1", "tekton.dev/v1alpha1")

#: Fields a step with ``ref`` may not set, with Tekton's name for each in its message.
_NOT_WITH_REF = (
    ("image", "image"),
    ("command", "command"),
    ("args", "args"),
    ("script", "script"),
    ("workingDir", "working dir"),
    ("env", "env"),
    ("volumeMounts", "volumeMounts"),
    ("results", "results"),
)
_PARAM_REF = re.compile(r"\$\(params(?:\.([_a-zA-Z][_a-zA-Z0-9.-]*)|\[['\"]([^'\"]+)['\"]\])")
_STEP_RESULT = re.compile(r"^\$\(steps\.([^.)]+)\.results\.([^.)\[]+)\)$")


class StepActionSpec(BaseModel):
    """A StepAction's spec (``tekton.dev/v1beta1``, also ``v1alpha1``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    description: str = ""
    image: str = ""
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    script: str | None = None
    workingDir: str | None = None
    params: list[ParamSpec] = Field(default_factory=list)
    results: list[TaskResult] = Field(default_factory=list)
    securityContext: dict[str, Any] | None = None
    volumeMounts: list[dict[str, Any]] | None = None


def ref_key(ref: StepRef) -> str:
    """Under which key a run freezes what ``ref`` resolves to: the StepAction's name, or
    for a remote ref ``<resolver>:<digest of its params>``."""
    if not ref.resolver:
        return ref.name
    params = [param.model_dump() for param in ref.params or []]
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return f"{ref.resolver}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def step_action_refs(spec: Mapping[str, Any]) -> dict[str, StepRef]:
    """The StepActions a Task's spec (JSON) references, by :func:`ref_key`, once each.

    Raises:
        CompileError: a ref is malformed as Tekton's ``validateRef`` says, or uses what is
            not served here (a URL-like name, variables in resolver params).
    """
    refs: dict[str, StepRef] = {}
    for index, step in enumerate(spec.get("steps") or []):
        raw = step.get("ref") if isinstance(step, dict) else None
        if not isinstance(raw, dict):
            continue
        at = f"steps[{index}].ref"
        ref = StepRef.model_validate(raw)
        if ref.params is not None and ref.name:
            raise CompileError(at, "expected exactly one, got both: name, params")
        if ref.params is not None and not ref.resolver:
            raise CompileError(f"{at}.resolver", "missing field(s)")
        if ref.resolver and ref.name:
            raise CompileError(
                f"{at}.name",
                "a resolver with a URL-like name (concise resolver syntax) is not supported: "
                "give the resolver's params",
                "Unsupported",
            )
        if ref.resolver and "$(" in json.dumps(raw.get("params")):
            raise CompileError(
                f"{at}.params",
                "variables in resolver params are not supported: StepActions are resolved "
                "when the run starts",
                "Unsupported",
            )
        if not ref.resolver and not ref.name:
            raise CompileError(f"{at}.name", "missing field(s)")
        refs.setdefault(ref_key(ref), ref)
    return refs


def check_step_fields(where: str, step: Step) -> None:
    """Tekton's rules on a step's ``ref`` and ``params``, with Tekton's messages.

    Raises:
        CompileError: a step with ``ref`` sets a field the StepAction provides, or a step
            without ``ref`` sets ``params``; ``field`` names it.
    """
    given = step.model_fields_set
    if step.ref is None:
        if step.params:
            raise CompileError(f"{where}.params", "params cannot be used without Ref")
        return
    for key, label in _NOT_WITH_REF:
        if key in given and (key == "env" or getattr(step, key)):  # env: even empty
            raise CompileError(f"{where}.{key}", f"{label} cannot be used with Ref")


def _param_names(text: str) -> list[str]:
    """What ``$(params.<name>...)`` in ``text`` reference: the whole dotted name (a
    string or array param may have dots in its name, an object is ``<name>.<key>``)."""
    return [m.group(1) or m.group(2) or "" for m in _PARAM_REF.finditer(text)]


def _declared(name: str, declared: set[str]) -> bool:
    return name in declared or name.split(".", 1)[0] in declared


def validate_step_action(name: str, spec: StepActionSpec) -> None:
    """``v1beta1.StepActionSpec.Validate`` (what Tekton's webhook checks at admission).

    Raises:
        CompileError: ``field`` is ``StepAction[<name>].<field>``, message as Tekton's.
    """
    at = f"StepAction[{name}]"
    if not spec.image:
        raise CompileError(f"{at}.image", "missing field(s): Image")
    if spec.script is not None and spec.script and spec.command:
        raise CompileError(f"{at}.script", "script cannot be used with command")
    if spec.script and _param_names(spec.script):
        raise CompileError(f"{at}.script", "param substitution in scripts is not allowed.")
    declared = {param.name for param in spec.params}
    if len(declared) != len(spec.params):
        raise CompileError(f"{at}.params", "parameter appears more than once")
    texts: list[tuple[str, str]] = [("image", spec.image)]
    texts += [(f"command[{i}]", text) for i, text in enumerate(spec.command or [])]
    texts += [(f"args[{i}]", text) for i, text in enumerate(spec.args or [])]
    texts += [(f"env[{var.name}]", var.value or "") for var in spec.env or []]
    texts += [("workingDir", spec.workingDir or "")]
    for index, mount in enumerate(spec.volumeMounts or []):
        mount_name = str(mount.get("name", ""))
        if _STEP_PARAM_ONLY.fullmatch(mount_name) is None:
            raise CompileError(
                f"{at}.volumeMounts[{index}].name",
                f"invalid value: {mount_name}: expect the Name to be a single param reference",
            )
        texts.append((f"volumeMounts[{index}].name", mount_name))
    for field_name, text in texts:
        unknown = [p for p in _param_names(text) if not _declared(p, declared)]
        if unknown:
            raise CompileError(f"{at}.{field_name}", f"non-existent variable in {text!r}")


_STEP_PARAM_ONLY = re.compile(r"\$\(params\.[_a-zA-Z][_a-zA-Z0-9-]*\)")


def _check_params(where: str, step: Step, spec: StepActionSpec) -> None:
    """``validateStepHasStepActionParameters``: none extra, every required one given."""
    declared = [param.name for param in spec.params]
    extra = [param.name for param in step.params if param.name not in declared]
    if extra:
        raise CompileError(
            f"{where}.params", f"extra params passed by Step to StepAction: [{' '.join(extra)}]"
        )
    given = {param.name for param in step.params}
    missing = [p.name for p in spec.params if p.default is None and p.name not in given]
    if missing:
        raise CompileError(
            f"{where}.params",
            f"step {step.name!r}: StepAction {ref_key(step.ref) if step.ref else ''!r} needs "
            f"param {missing[0]!r}: non-existent params in Step: [{' '.join(missing)}]",
        )


def _kind(value: ParamValue) -> str:
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "string"


def action_scope(where: str, step: Step, spec: StepActionSpec, task: Scope) -> Scope:
    """The StepAction's ``$(params...)``: the step's params (the task's params substituted
    in them), else the defaults (which may reference other params); a step result
    reference stays one, for the entrypoint to read when the step starts.

    Raises:
        CompileError: a value has the wrong type, or defaults reference each other in a
            cycle or reference no param.
    """
    given = {param.name: task.value(param.value) for param in step.params}
    scope = Scope()
    pending: dict[str, str] = {}
    for param in spec.params:
        value = given.get(param.name, param.default)
        assert value is not None  # _check_params
        if param.name not in given and isinstance(value, str) and "$(params." in value:
            pending[param.name] = value
            continue
        result = _STEP_RESULT.match(value) if isinstance(value, str) else None
        if result is not None:
            _add_step_result(scope, param, result.group(1), result.group(2), _texts(spec))
            continue
        if _kind(value) != param.kind:
            raise CompileError(
                f"{where}.params[{param.name}]",
                f"invalid parameter substitution: {param.name}. Please check the types of "
                "the default value and the passed value",
            )
        if isinstance(value, dict) and isinstance(param.default, dict):
            value = {**param.default, **value}
        scope.add_param(param.name, value)
    while pending:
        ready = [
            name
            for name, text in pending.items()
            if all(f"params.{p}" in scope.strings for p in _param_names(text))
        ]
        if not ready:
            name, text = next(iter(pending.items()))
            names = {p.name for p in spec.params}
            for ref in _param_names(text):
                if ref not in names:
                    raise CompileError(
                        f"{where}.params[{name}]",
                        f'parameter "{name}" references non-existent parameter "{ref}"',
                    )
            raise CompileError(
                f"{where}.params", "circular dependency detected in parameter references"
            )
        for name in ready:
            scope.add_param(name, scope.string(pending.pop(name)))
    return scope


def _texts(spec: StepActionSpec) -> str:
    """Where a StepAction may index an array param: command, args and env."""
    env = [var.value or "" for var in spec.env or []]
    return "\n".join([*(spec.command or []), *(spec.args or []), *env])


def _add_step_result(scope: Scope, param: ParamSpec, step: str, result: str, texts: str) -> None:
    """``$(params.<p>...)`` as the step result ``$(steps.<step>.results.<result>...)``
    (an array's ``[i]`` where command, args or env use it, as Tekton does)."""
    ref = f"$(steps.{step}.results.{result}"
    if param.kind == "object":
        for key in param.properties or {}:
            scope.strings[f"params.{param.name}.{key}"] = f"{ref}.{key})"
    elif param.kind == "array":
        scope.strings[f"params.{param.name}[*]"] = f"{ref}[*])"
        used = re.findall(rf"\$\(params\.{re.escape(param.name)}\[(\d+)\]\)", texts)
        for index in used:
            scope.strings[f"params.{param.name}[{index}]"] = f"{ref}[{index}])"
    else:
        scope.strings[f"params.{param.name}"] = f"{ref})"


def resolve_step(where: str, step: Step, spec: StepActionSpec, task: Scope) -> Step:
    """The step as Tekton runs it: the StepAction, its params substituted, merged in."""
    _check_params(where, step, spec)
    scope = action_scope(where, step, spec, task)
    data = step.model_dump(by_alias=True, exclude_unset=True, exclude={"ref", "params"})
    data.pop("securityContext", None)  # the StepAction's wins, set or not
    data["image"] = scope.string(spec.image)
    if spec.command:
        data["command"] = scope.strings_list(spec.command)
    if spec.args:
        data["args"] = scope.strings_list(spec.args)
    if spec.script:
        data["script"] = spec.script
    if spec.workingDir:
        data["workingDir"] = scope.string(spec.workingDir)
    if spec.env is not None:
        data["env"] = [
            {**var.model_dump(exclude_none=True), "value": scope.string(var.value)}
            if var.value is not None
            else var.model_dump(exclude_none=True)
            for var in spec.env
        ]
    if spec.securityContext is not None:
        data["securityContext"] = spec.securityContext
    if spec.volumeMounts:
        data["volumeMounts"] = [
            {
                **mount,
                **{
                    key: scope.string(str(mount[key]))
                    for key in ("name", "mountPath", "subPath")
                    if key in mount
                },
            }
            for mount in spec.volumeMounts
        ]
    if spec.results:
        data["results"] = [result.model_dump(exclude_none=True) for result in spec.results]
    if not spec.command and not spec.script:
        raise CompileError(
            f"{where}.ref",
            f"StepAction {ref_key(step.ref) if step.ref else ''!r} has neither command nor "
            "script: the image's own entrypoint cannot be looked up here",
        )
    return Step.model_validate(data)


def inline_step_actions(
    where: str, spec: TaskSpec, actions: Mapping[str, StepActionSpec], scope: Scope
) -> TaskSpec:
    """``spec`` with every step that references a StepAction replaced by the step it
    resolves to (``scope``: the task's variables, for the step's params).

    Raises:
        CompileError: a rule above is broken, or a StepAction is missing; ``field`` says where.
    """
    if not any(step.ref is not None or step.params for step in spec.steps):
        return spec
    steps: list[Step] = []
    for index, step in enumerate(spec.steps):
        at = f"{where}.steps[{index}]"
        check_step_fields(at, step)
        if step.ref is None:
            steps.append(step)
            continue
        key = ref_key(step.ref)
        action = actions.get(key)
        if action is None:
            raise CompileError(f"{at}.ref", f"StepAction {key!r} not found", "StepActionNotFound")
        validate_step_action(step.ref.name or key, action)
        steps.append(resolve_step(at, step, action, scope))
    return spec.model_copy(update={"steps": steps})


def when_texts(step: Step) -> list[str]:
    """A step's ``when`` as text, where ``$(steps.<s>.results.<r>)`` may appear."""
    return [json.dumps(when.model_dump(exclude_none=True)) for when in step.when]
