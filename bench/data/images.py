"""Image helpers shared by every adapter: CT windowing, resizing, and reading medical image files.

Formats (by extension; a file without a known extension is tried as DICOM, then with PIL):

* PNG / JPEG / TIFF / BMP (PIL): grayscale (``L``, 16-bit ``I;16``, ``I``, ``F``) -> 1 channel, every
  colour mode -> RGB, 3 channels. 8-bit images are scaled by 1/255; 16-bit, 32-bit and float images
  hold raw intensities: windowed when a window is given, else scaled by the dtype range (16-bit) or
  min-max normalised.
* DICOM (pydicom): ``RescaleSlope`` / ``RescaleIntercept`` applied (CT -> HU), then the given window,
  else the file's first ``WindowCenter`` / ``WindowWidth``, else min-max; MONOCHROME1 is inverted;
  colour DICOM -> RGB; multi-frame files need a slice.
* NIfTI ``.nii`` / ``.nii.gz`` (nibabel): a 2-D image, or one slice of a 3-D volume (``slice``
  index or ``"middle"`` along ``slice_axis``); the window if given, else min-max.
* ``.npy``: ``[H, W]``, ``[H, W, 3]`` / ``[3, H, W]`` (RGB), or a 3-D volume (a slice, as NIfTI).

Every reader returns float32 ``[C, H, W]`` in [0, 1]; :func:`resize_batch` brings it to the budget's
square resolution. Errors are :class:`ImageReadError` with a one-line reason.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HU_WINDOW = (-125.0, 275.0)  # AMF-MedIT appendix A.1 (OL3I's abdominal window)
PHOTO_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
DICOM_EXTS = (".dcm", ".dicom", ".ima")
NIFTI_EXTS = (".nii", ".nii.gz")
NPY_EXTS = (".npy",)


class ImageReadError(Exception):
    """A file that cannot be read as an image; the message is one line."""


@dataclass(frozen=True)
class ImageOptions:
    """How raw intensities become [0, 1]: a window ``(lo, hi)`` (CT: HU) and the slice of a volume."""

    window: tuple[float, float] | None = None
    slice: int | str | None = None  # index, or "middle"
    slice_axis: int = -1


def window_ct(hu, lo: float = HU_WINDOW[0], hi: float = HU_WINDOW[1]) -> np.ndarray:
    """CT windowing of AMF-MedIT appendix A.1: clip HU to ``[lo, hi]`` and scale to [0, 1] (float32)."""
    hu = np.asarray(hu, dtype=np.float32)
    out = (hu - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def resize_batch(x: np.ndarray, size: int) -> np.ndarray:
    """Resize ``[B, C, H, W]`` float32 to ``[B, C, size, size]`` (antialiased bilinear)."""
    if x.shape[-2:] == (size, size):
        return np.ascontiguousarray(x, dtype=np.float32)
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp_(0.0, 1.0).numpy()


def read_photo(path: Path, size: int, mode: str = "RGB") -> np.ndarray:
    """A photo through PIL, converted to ``mode``, resized to ``size`` (bilinear), ``[C, S, S]`` in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageReadError(f"cannot read image {path} ({type(exc).__name__})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr * np.float32(1 / 255)


# ------------------------------------------------------------------------------------- formats
def image_format(path: Path) -> str:
    """``photo`` | ``dicom`` | ``nifti`` | ``npy`` | ``unknown``, from the file name."""
    name = path.name.lower()
    if name.endswith(NIFTI_EXTS):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix in PHOTO_EXTS:
        return "photo"
    if suffix in DICOM_EXTS:
        return "dicom"
    if suffix in NPY_EXTS:
        return "npy"
    return "unknown"


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))


MINMAX = " (min-max)"  # mode suffix: raw intensities scaled per image, absolute values (HU) lost


def _scale_raw(x: np.ndarray, opts: ImageOptions, window: tuple[float, float] | None = None) -> tuple[np.ndarray, str]:
    """Raw single-channel intensities -> ([0, 1], mode suffix): the options' window, else ``window``, else min-max."""
    win = opts.window or window
    if win is not None:
        return window_ct(np.nan_to_num(np.asarray(x, dtype=np.float32)), *win), ""
    return minmax(x), MINMAX


def _pick_slice(vol: np.ndarray, opts: ImageOptions, what: str) -> np.ndarray:
    if opts.slice is None:
        raise ImageReadError(
            f"is a 3-D {what} of shape {tuple(vol.shape)}; set `slice:` in the dataset YAML (an index or middle)"
        )
    axis = opts.slice_axis % vol.ndim
    depth = vol.shape[axis]
    idx = depth // 2 if opts.slice == "middle" else int(opts.slice)
    if not 0 <= idx < depth:
        raise ImageReadError(f"has {depth} slices along axis {axis}; slice {opts.slice!r} is out of range")
    return np.take(vol, idx, axis=axis)


def _squeeze(arr: np.ndarray) -> np.ndarray:
    return arr.reshape([d for d in arr.shape if d != 1]) if arr.ndim > 2 else arr


def _read_pil(data: bytes, opts: ImageOptions) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if getattr(im, "n_frames", 1) > 1 and opts.slice is not None:
                n = im.n_frames
                idx = n // 2 if opts.slice == "middle" else int(opts.slice)
                if not 0 <= idx < n:
                    raise ImageReadError(f"has {n} frames; slice {opts.slice!r} is out of range")
                im.seek(idx)
            mode = im.mode
            if mode in ("1", "L", "LA", "P") and (mode != "P" or _gray_palette(im)):
                arr = np.asarray(im.convert("L"), dtype=np.float32)[None] * np.float32(1 / 255)
                return arr, "L"
            if mode.startswith("I;16") or mode in ("I", "F"):
                raw = np.asarray(im)
                if mode.startswith("I;16") and opts.window is None:
                    return (raw.astype(np.float32) * np.float32(1 / 65535))[None], mode
                out, how = _scale_raw(raw, opts)
                return out[None], mode + how
            arr = np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) * np.float32(1 / 255)
            return np.ascontiguousarray(arr), "RGB" if mode != "P" else "P->RGB"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"is not a readable image ({type(exc).__name__}: {_first_line(exc)})") from None


def _gray_palette(im) -> bool:
    try:
        pal = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    except ValueError:
        return False
    return bool(len(pal)) and bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all())


def _read_dicom(data: bytes, opts: ImageOptions) -> tuple[np.ndarray, str]:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # pragma: no cover - a dependency
        raise ImageReadError("is DICOM but pydicom is not installed; pip install pydicom") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        arr = np.asarray(ds.pixel_array)
    except (InvalidDicomError, AttributeError, KeyError, ValueError, TypeError, RuntimeError, NotImplementedError,
            OSError, EOFError) as exc:
        raise ImageReadError(f"is not a readable DICOM image ({type(exc).__name__}: {_first_line(exc)})") from None
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:  # [frames, H, W(, 3)]
        idx = frames // 2 if opts.slice == "middle" else opts.slice
        if idx is None:
            raise ImageReadError(f"is a multi-frame DICOM ({frames} frames); set `slice:` in the dataset YAML")
        if not 0 <= int(idx) < frames:
            raise ImageReadError(f"has {frames} frames; slice {opts.slice!r} is out of range")
        arr = arr[int(idx)]
    if samples == 3:
        arr = arr.astype(np.float32)
        top = 255.0 if int(getattr(ds, "BitsStored", 8) or 8) <= 8 else float(2 ** int(ds.BitsStored) - 1)
        return np.ascontiguousarray(np.clip(arr / top, 0, 1).transpose(2, 0, 1)), "DICOM RGB"
    hu = arr.astype(np.float32) * np.float32(float(getattr(ds, "RescaleSlope", 1) or 1)) + np.float32(
        float(getattr(ds, "RescaleIntercept", 0) or 0))
    window = None
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        if w > 0:
            window = (c - w / 2, c + w / 2)
    out, how = _scale_raw(hu, opts, window)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out[None], f"DICOM {getattr(ds, 'Modality', '')}".strip() + how


def _read_nifti(data: bytes, opts: ImageOptions) -> tuple[np.ndarray, str]:
    try:
        import nibabel as nib
    except ImportError:  # pragma: no cover - a dependency
        raise ImageReadError("is NIfTI but nibabel is not installed; pip install nibabel") from None
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        header_size = int(np.frombuffer(raw[:4], dtype="<i4")[0]) if len(raw) >= 4 else 0
        if header_size not in (348, 540):
            header_size = int(np.frombuffer(raw[:4], dtype=">i4")[0]) if len(raw) >= 4 else 0
        cls = nib.Nifti2Image if header_size == 540 else nib.Nifti1Image
        img = cls.from_bytes(raw)
        vol = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types on a corrupt file
        raise ImageReadError(f"is not a readable NIfTI image ({type(exc).__name__}: {_first_line(exc)})") from None
    vol = _squeeze(vol)
    if vol.ndim == 3:
        vol = _pick_slice(vol, opts, "NIfTI volume")
    if vol.ndim != 2:
        raise ImageReadError(f"is a NIfTI image of shape {tuple(img.shape)}; bench reads 2-D images or one slice of a 3-D volume")
    out, how = _scale_raw(vol, opts)
    return out[None], "NIfTI" + how


def _read_npy(data: bytes, opts: ImageOptions) -> tuple[np.ndarray, str]:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageReadError(f"is not a readable .npy array ({_first_line(exc)})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise ImageReadError("holds no numeric array")
    arr = _squeeze(arr)
    if arr.ndim == 3 and 3 in (arr.shape[0], arr.shape[-1]) and opts.slice is None:
        rgb = arr if arr.shape[0] == 3 else arr.transpose(2, 0, 1)
        scaled = rgb.astype(np.float32) / 255 if arr.dtype == np.uint8 else minmax(rgb)
        return np.ascontiguousarray(np.clip(scaled, 0, 1)), "npy RGB"
    if arr.ndim == 3:
        arr = _pick_slice(arr, opts, "array")
    if arr.ndim != 2:
        raise ImageReadError(f"holds an array of shape {arr.shape}; expected [H, W], [H, W, 3], [3, H, W] or a 3-D volume")
    if arr.dtype == np.uint8 and opts.window is None:
        return (arr.astype(np.float32) / 255)[None], "npy"
    f = arr.astype(np.float32)
    if opts.window is None and f.size and 0.0 <= float(np.nanmin(f)) and float(np.nanmax(f)) <= 1.0:
        return np.nan_to_num(f)[None], "npy"
    out, how = _scale_raw(f, opts)
    return out[None], "npy" + how


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def decode_image(data: bytes, path: Path, opts: ImageOptions = ImageOptions()) -> tuple[np.ndarray, str]:
    """Bytes of one image file -> (float32 ``[C, H, W]`` in [0, 1], mode label); ImageReadError otherwise."""
    if not data:
        raise ImageReadError("is an empty file")
    fmt = image_format(path)
    if fmt == "unknown":
        fmt = "dicom" if data[128:132] == b"DICM" else "photo"
    reader = {"photo": _read_pil, "dicom": _read_dicom, "nifti": _read_nifti, "npy": _read_npy}[fmt]
    arr, mode = reader(data, opts)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3) or min(arr.shape[1:]) < 1:
        raise ImageReadError(f"decodes to shape {arr.shape}; expected a 2-D image")
    return np.clip(np.nan_to_num(arr.astype(np.float32, copy=False)), 0.0, 1.0), mode


def read_image(path: Path, opts: ImageOptions = ImageOptions()) -> tuple[np.ndarray, str]:
    """:func:`decode_image` of a file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    return decode_image(data, Path(path), opts)


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """``[1, H, W]`` repeated to 3 channels when the dataset is RGB; ``[3, ...]`` kept."""
    if arr.shape[0] == channels:
        return arr
    if arr.shape[0] == 1 and channels == 3:
        return np.repeat(arr, 3, axis=0)
    return arr.mean(axis=0, keepdims=True)  # pragma: no cover - RGB images in a grayscale set never happen
