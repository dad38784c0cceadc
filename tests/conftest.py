pytest_plugins = ["hookd.testing.pytest_plugin"]
