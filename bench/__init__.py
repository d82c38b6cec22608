"""bench: a benchmark harness for fusing medical images with tabular (EHR) data."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("bench")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0+src"

__all__ = ["__version__"]
