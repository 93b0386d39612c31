"""The input of Pipeline-in-Pod, typed: a subset of Tekton v1 Pipeline, Task and Step.

Every field Tekton defines is either modelled here (and honoured by the compiler) or
named in a rejection: models forbid unknown fields, so a field this controller cannot
honour fails the run at the start, naming it, instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from customtask_sdk import Params

__all__ = [
    "Param",
    "ParamSpec",
    "ParamValue",
    "PipelineInPodInput",
    "PipelineResult",
    "PipelineSpec",
    "PipelineTask",
    "Sidecar",
    "Step",
    "StepRef",
    "StepTemplate",
    "TaskMetadata",
    "TaskRef",
    "TaskResult",
    "TaskRunSpec",
    "TaskSpec",
    "WhenExpression",
    "WorkspaceBinding",
    "WorkspaceDeclaration",
    "WorkspacePipelineTaskBinding",
]

#: A param or result value: string, array or object (Tekton's ParamValue).
ParamValue = str | list[str] | dict[str, str]


class _Tekton(BaseModel):
    """Tekton's JSON names; unknown fields are rejected (named by the validation error)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ParamSpec(_Tekton):
    """A declared param: ``name``, ``type`` (string/array/object) and ``default``."""

    name: str
    type: Literal["string", "array", "object"] | None = None
    description: str = ""
    default: ParamValue | None = None
    properties: dict[str, dict[str, Any]] | None = None
    enum: list[str] | None = None

    @property
    def kind(self) -> str:
        """The declared type, else inferred from the default as Tekton does."""
        if self.type is not None:
            return self.type
        if isinstance(self.default, list):
            return "array"
        if isinstance(self.default, dict) or self.properties:
            return "object"
        return "string"


class Param(_Tekton):
    """A param binding: ``name`` and ``value``."""

    name: str
    value: ParamValue


class TaskResult(_Tekton):
    """A declared task result; written to ``$(results.<name>.path)``, or (a task's) fetched
    from a step result by ``value: $(steps.<s>.results.<r>)``."""

    name: str
    type: Literal["string", "array", "object"] = "string"
    description: str = ""
    properties: dict[str, dict[str, Any]] | None = None
    value: ParamValue | None = None


class PipelineResult(_Tekton):
    """A pipeline result: ``value`` usually references a task result."""

    name: str
    type: Literal["string", "array", "object"] = "string"
    description: str = ""
    value: ParamValue


class WorkspaceDeclaration(_Tekton):
    """A workspace a Task declares."""

    name: str
    description: str = ""
    mountPath: str | None = None
    readOnly: bool = False
    optional: bool = False


class PipelineWorkspaceDeclaration(_Tekton):
    """A workspace a Pipeline declares."""

    name: str
    description: str = ""
    optional: bool = False


class WorkspacePipelineTaskBinding(_Tekton):
    """A pipeline task's binding of its Task's workspace to a pipeline workspace."""

    name: str
    workspace: str | None = None
    subPath: str = ""


class WorkspaceBinding(_Tekton):
    """A run's binding of a pipeline workspace to a volume (default: a shared emptyDir)."""

    name: str
    subPath: str = ""
    emptyDir: dict[str, Any] | None = None
    persistentVolumeClaim: dict[str, Any] | None = None
    configMap: dict[str, Any] | None = None
    secret: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> WorkspaceBinding:
        given = [
            key
            for key in ("emptyDir", "persistentVolumeClaim", "configMap", "secret")
            if getattr(self, key) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"workspace {self.name!r} binds {' and '.join(given)}: give one")
        return self


class EnvVar(_Tekton):
    """A container env var (``value`` or ``valueFrom``)."""

    name: str
    value: str | None = None
    valueFrom: dict[str, Any] | None = None


class _ContainerFields(_Tekton):
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    workingDir: str | None = None
    env: list[EnvVar] = Field(default_factory=list)
    envFrom: list[dict[str, Any]] | None = None
    #: ``computeResources`` in tekton.dev/v1 (``resources`` in v1beta1): both are read.
    resources: dict[str, Any] | None = Field(None, alias="computeResources")
    securityContext: dict[str, Any] | None = None
    imagePullPolicy: str | None = None
    volumeMounts: list[dict[str, Any]] | None = None


class StepTemplate(_ContainerFields):
    """Defaults for every step of a Task (a step's own values win; env merged by name)."""


class StepRef(_Tekton):
    """A step's ``ref``: a namespaced StepAction by ``name``, or a ``resolver`` and its
    ``params`` (remote resolution)."""

    name: str = ""
    resolver: str | None = None
    params: list[Param] | None = None


class Step(_ContainerFields):
    """A step: one container, ordered by Tekton's entrypoint; or (``ref``) a StepAction."""

    name: str = ""
    script: str | None = None
    results: list[TaskResult] = Field(default_factory=list)
    timeout: str | None = None
    onError: Literal["continue", "stopAndFail"] | None = None
    displayName: str | None = None
    ref: StepRef | None = None
    params: list[Param] = Field(default_factory=list)
    when: list[WhenExpression] = Field(default_factory=list)


class Sidecar(_ContainerFields):
    """A sidecar: runs beside the task's steps, stopped when the Pod's steps are done."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    name: str
    script: str | None = None


class TaskMetadata(_Tekton):
    """Labels and annotations of an embedded ``taskSpec`` (and, frozen, of a Task)."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TaskSpec(_Tekton):
    """A Task's spec (``tekton.dev/v1``), plus this controller's ``preSteps`` and
    ``postSteps`` (run before and after ``steps``, with the network when ``steps`` are
    hermetic: :mod:`examples.pipeline_in_pod.hermetic`)."""

    params: list[ParamSpec] = Field(default_factory=list)
    results: list[TaskResult] = Field(default_factory=list)
    preSteps: list[Step] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)
    postSteps: list[Step] = Field(default_factory=list)
    metadata: TaskMetadata | None = None
    sidecars: list[Sidecar] = Field(default_factory=list)
    workspaces: list[WorkspaceDeclaration] = Field(default_factory=list)
    stepTemplate: StepTemplate | None = None
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    description: str = ""
    displayName: str = ""


class TaskRef(_Tekton):
    """A namespaced ``tekton.dev/v1`` Task by ``name``, or a custom task: any other
    ``apiVersion`` and ``kind`` (``name`` optional), run by its own controller through a
    CustomRun."""

    name: str | None = None
    kind: str | None = None
    apiVersion: str | None = None

    @property
    def is_custom(self) -> bool:
        """A custom task: ``apiVersion`` and ``kind`` both given, other than Tekton's Task."""
        return (
            self.apiVersion is not None
            and self.kind is not None
            and not (self.kind == "Task" and self.apiVersion.startswith("tekton.dev/"))
        )

    @model_validator(mode="after")
    def _task_or_custom(self) -> TaskRef:
        if not self.is_custom and (self.kind not in (None, "Task") or not self.name):
            raise ValueError(
                "a taskRef names a Task (name), or a custom task (apiVersion and kind)"
            )
        return self


class WhenExpression(_Tekton):
    """``input`` ``operator`` (in/notin) ``values``, or ``cel``."""

    input: str | None = None
    operator: Literal["in", "notin"] | None = None
    values: list[str] | None = None
    cel: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> WhenExpression:
        if self.cel is None and (self.input is None or self.operator is None or not self.values):
            raise ValueError("a when expression needs input, operator and values (or cel)")
        return self


class Matrix(_Tekton):
    """Fan a pipeline task out over params (and ``include`` combinations)."""

    params: list[Param] = Field(default_factory=list)
    include: list[dict[str, Any]] = Field(default_factory=list)


class PipelineTask(_Tekton):
    """A task of the Pipeline: a ``taskRef`` or an inline ``taskSpec``."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    displayName: str = ""
    description: str = ""
    taskRef: TaskRef | None = None
    taskSpec: TaskSpec | None = None
    params: list[Param] = Field(default_factory=list)
    workspaces: list[WorkspacePipelineTaskBinding] = Field(default_factory=list)
    runAfter: list[str] = Field(default_factory=list)
    when: list[WhenExpression] = Field(default_factory=list)
    timeout: str | None = None
    retries: int = 0
    matrix: Matrix | None = None

    @model_validator(mode="after")
    def _one_task(self) -> PipelineTask:
        if (self.taskRef is None) == (self.taskSpec is None):
            raise ValueError(f"task {self.name!r} needs exactly one of taskRef and taskSpec")
        return self


class PipelineSpec(_Tekton):
    """A Pipeline's spec (``tekton.dev/v1``)."""

    params: list[ParamSpec] = Field(default_factory=list)
    workspaces: list[PipelineWorkspaceDeclaration] = Field(default_factory=list)
    tasks: list[PipelineTask] = Field(min_length=1)
    finally_: list[PipelineTask] = Field(default_factory=list, alias="finally")
    results: list[PipelineResult] = Field(default_factory=list)
    description: str = ""
    displayName: str = ""


class PipelineRef(_Tekton):
    """A namespaced ``tekton.dev/v1`` Pipeline by name."""

    name: str


class Timeouts(_Tekton):
    """``timeouts.pipeline``, ``tasks`` and ``finally``, as on a PipelineRun."""

    pipeline: str | None = None
    tasks: str | None = None
    finally_: str | None = Field(None, alias="finally")


class TaskRunSpec(_Tekton):
    """Per pipeline task settings of the run, as a PipelineRun's ``taskRunSpecs``: only
    ``metadata`` (its annotations apply to that task, as Tekton's reach its TaskRun)."""

    pipelineTaskName: str
    metadata: TaskMetadata = Field(default_factory=TaskMetadata)


class PipelineInPodInput(Params):
    """The run's input: pipeline params, plus (embedded spec) the pipeline and bindings.

    ``spec.params`` and any field of ``customSpec.spec`` other than ``pipelineRef``,
    ``pipelineSpec``, ``workspaces``, ``timeouts``, ``podTemplate`` and ``taskRunSpecs``
    are the Pipeline's params.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    pipelineRef: PipelineRef | None = None
    pipelineSpec: PipelineSpec | None = None
    workspaces: list[WorkspaceBinding] = Field(default_factory=list)
    timeouts: Timeouts | None = None
    podTemplate: dict[str, Any] | None = None
    taskRunSpecs: list[TaskRunSpec] = Field(default_factory=list)

    @property
    def params(self) -> dict[str, ParamValue]:
        """The pipeline params given by the run."""
        extra = self.model_extra or {}
        values: dict[str, ParamValue] = {}
        for name, value in extra.items():
            if not isinstance(value, str | list | dict):
                raise ValueError(f"param {name!r} must be a string, array or object")
            values[name] = value
        return values
