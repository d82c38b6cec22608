"""Built-in plug-ins. Each module registers itself through the same public decorators a third party uses."""

from baselines import fusion, image, tabular  # noqa: F401
