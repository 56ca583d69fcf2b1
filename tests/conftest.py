pytest_plugins = ["tests.env.pytest_plugin"]
