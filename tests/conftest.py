import logging
from collections.abc import Iterator

import pytest

pytest_plugins = ["customtask_sdk.testing.pytest_plugin"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging(), which replaces the root logger's handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
