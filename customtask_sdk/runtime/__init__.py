"""Running reconcilers: controllers, the manager, leader election, metrics, events, logs."""

from customtask_sdk.runtime.controller import Controller
from customtask_sdk.runtime.events import EventRecorder
from customtask_sdk.runtime.leader import LeaderElector
from customtask_sdk.runtime.logs import configure_logging
from customtask_sdk.runtime.manager import LeaderElection, Manager
from customtask_sdk.runtime.metrics import ControllerMetrics

__all__ = [
    "Controller",
    "ControllerMetrics",
    "EventRecorder",
    "LeaderElection",
    "LeaderElector",
    "Manager",
    "configure_logging",
]
