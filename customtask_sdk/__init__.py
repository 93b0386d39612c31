"""customtask-sdk: write Tekton custom task controllers in Python.

Layers, each importing only those below it: :mod:`customtask_sdk.client` (configuration,
one shared API client, typed errors), :mod:`customtask_sdk.queue` (the work queue), and
:mod:`customtask_sdk.testing` (a real control plane for tests).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
