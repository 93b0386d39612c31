pytest_plugins = ["customtask_sdk.testing.pytest_plugin"]
