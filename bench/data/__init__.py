"""Dataset adapters (real OL3I and DVM, their synthetic replicas, and your own table + images) and
shared preprocessing.

Importing this package registers the datasets ``ol3i``, ``ol3i-synthetic``, ``dvm``,
``dvm-synthetic`` and ``table`` (a YAML-described CSV/TSV/Parquet with an image-path column,
:mod:`bench.data.table`). Helpers every adapter shares: :mod:`bench.data.images` (reading PNG/JPEG/
TIFF/DICOM/NIfTI/.npy, CT windowing, resizing), :mod:`bench.data.tabular` (reading tables, column
typing, categorical codes, splits), :mod:`bench.data.base` (data-root resolution, the image cache)
and :mod:`bench.data.checks` (the checks of ``bench check-data``). Only numpy, pandas, h5py and
pyyaml are imported here; torch, PIL, pydicom, nibabel, scipy and scikit-learn are imported inside
the functions that need them.
"""

from bench.data import dvm, dvm_synthetic, ol3i, ol3i_synthetic, table  # noqa: F401  (registrations)
from bench.data.base import SPLITS, MultimodalData, Provenance
from bench.data.preprocess import Preprocessor, fit_preprocessor

__all__ = ["SPLITS", "MultimodalData", "Preprocessor", "Provenance", "fit_preprocessor"]
