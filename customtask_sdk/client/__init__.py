"""Low layer: API configuration, one shared client, typed errors, resource paths."""

from customtask_sdk.client.api import JSON, KubeClient, PatchType
from customtask_sdk.client.config import ClientConfig, ConfigurationError, load_configuration
from customtask_sdk.client.discovery import Discovery
from customtask_sdk.client.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    ServerError,
    TooManyRequestsError,
)
from customtask_sdk.client.resources import CUSTOM_RUNS, PIPELINE_RUNS, TASK_RUNS, Resource

__all__ = [
    "CUSTOM_RUNS",
    "JSON",
    "PIPELINE_RUNS",
    "TASK_RUNS",
    "ApiError",
    "ClientConfig",
    "ConfigurationError",
    "ConflictError",
    "Discovery",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "KubeClient",
    "NotFoundError",
    "PatchType",
    "Resource",
    "ServerError",
    "TooManyRequestsError",
    "load_configuration",
]
