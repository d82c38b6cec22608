"""Dataset adapters (real OL3I and DVM, and their synthetic replicas) and shared preprocessing.

Importing this package registers the datasets ``ol3i``, ``ol3i-synthetic``, ``dvm`` and
``dvm-synthetic``. Only numpy, pandas and h5py are imported here; torch, PIL, scipy and
scikit-learn are imported inside the functions that need them.
"""

from bench.data import dvm, dvm_synthetic, ol3i, ol3i_synthetic  # noqa: F401  (registrations)
from bench.data.base import SPLITS, MultimodalData, Provenance
from bench.data.preprocess import Preprocessor, fit_preprocessor

__all__ = ["SPLITS", "MultimodalData", "Preprocessor", "Provenance", "fit_preprocessor"]
