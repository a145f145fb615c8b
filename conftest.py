"""Repository-level conftest: the plugin itself comes from the `pytest11` entry point."""

pytest_plugins = ["pytester"]  # the project's own tests run the gate black-box with pytester
