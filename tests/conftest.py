pytest_plugins = ["tests.env.pytest_plugin", "tests.leftover_tasks"]
