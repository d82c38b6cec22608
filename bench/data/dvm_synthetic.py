"""Synthetic DVM replica: car-model classification from a small front-view "car" image + 13 features.

Same schema as the real adapter's protocol (:mod:`bench.data.dvm`): 9 continuous features
(Adv_year, Adv_month, Reg_year, Runned_Miles, Price, Seat_num, Door_num, Entry_price,
Engine_size) and 4 categorical (Color, Bodytype, Gearbox, Fuel_type), ``n_classes`` car models
(101 by default) and a random 72 / 18 / 10 split. Each class is a car model with a maker (whose
grille / headlight style it shares), a body type, a production period, an entry price, an engine
and seat / door configuration; each sample is an advert of one car of that model. The image
carries body shape, grille and headlights (class and maker signal) and the colour (shared with
the table); the table carries price, year and configuration. Neither identifies the model alone.
The generative model is written out in ``datasets/dvm-synthetic.md``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.data.base import (
    MultimodalData,
    Provenance,
    checksum_arrays,
    default_cache_dir,
    render_images,
    source_digest,
)
from bench.data.dvm import CATEGORICAL, CONTINUOUS
from bench.errors import DataError
from bench.registry import register_dataset

GENERATOR_VERSION = "dvm-synth-v1"
_SCHEMA_SEED = 20210901

COLORS = {  # name: (RGB in [0, 1], market share weight)
    "Black": ((0.08, 0.08, 0.09), 18),
    "Silver": ((0.72, 0.73, 0.75), 15),
    "Blue": ((0.12, 0.25, 0.62), 13),
    "Grey": ((0.42, 0.43, 0.45), 14),
    "White": ((0.93, 0.93, 0.92), 13),
    "Red": ((0.72, 0.08, 0.08), 9),
    "Green": ((0.10, 0.40, 0.18), 2),
    "Yellow": ((0.90, 0.78, 0.12), 1),
    "Brown": ((0.40, 0.25, 0.12), 1),
    "Orange": ((0.95, 0.45, 0.08), 1),
    "Purple": ((0.38, 0.15, 0.45), 1),
    "Beige": ((0.82, 0.74, 0.58), 1),
    "Bronze": ((0.55, 0.38, 0.18), 1),
    "Gold": ((0.80, 0.65, 0.25), 1),
    "Turquoise": ((0.10, 0.65, 0.65), 1),
    "Maroon": ((0.40, 0.05, 0.08), 1),
    "Multicolour": ((0.55, 0.45, 0.55), 1),
    "Pink": ((0.92, 0.55, 0.70), 1),
}
BODYTYPES = {  # name: (share, height/width of the front, roof fraction, seats, doors)
    "Hatchback": (30, 0.62, 0.42, 5, 5),
    "SUV": (22, 0.80, 0.40, 5, 5),
    "Saloon": (14, 0.58, 0.40, 5, 4),
    "Estate": (9, 0.60, 0.42, 5, 5),
    "MPV": (8, 0.78, 0.46, 7, 5),
    "Coupe": (6, 0.50, 0.36, 4, 2),
    "Convertible": (5, 0.48, 0.30, 4, 2),
    "Pickup": (3, 0.80, 0.38, 5, 4),
    "Limousine": (1, 0.60, 0.40, 5, 4),
    "Minibus": (1, 0.95, 0.48, 9, 5),
    "Combi Van": (1, 0.90, 0.45, 5, 5),
}
GEARBOXES = ("Manual", "Automatic", "Semi-Automatic")
FUELS = ("Petrol", "Diesel", "Hybrid  Petrol/Electric", "Electric", "Petrol Plug-in Hybrid")
N_MAKERS = 30


def _schema(n_classes: int) -> dict:
    """Class prototypes; fixed by the generator version and ``n_classes``, not by the data seed."""
    rng = np.random.default_rng([_SCHEMA_SEED, n_classes])
    makers = {
        "grille_shape": rng.uniform(2.0, 8.0, N_MAKERS),  # superellipse exponent: round .. square
        "grille_w": rng.uniform(0.3, 0.6, N_MAKERS),
        "grille_h": rng.uniform(0.12, 0.3, N_MAKERS),
        "light_aspect": rng.uniform(1.2, 3.5, N_MAKERS),
        "premium": rng.normal(0, 0.35, N_MAKERS),
    }
    body_names = list(BODYTYPES)
    body_p = np.array([BODYTYPES[b][0] for b in body_names], float)
    maker = rng.integers(0, N_MAKERS, n_classes)
    body = rng.choice(len(body_names), n_classes, p=body_p / body_p.sum())
    launch = rng.integers(2001, 2017, n_classes)
    span = rng.integers(3, 10, n_classes)
    price = np.exp(np.log(21000) + makers["premium"][maker] + 0.35 * rng.normal(size=n_classes))
    engine = np.round(
        np.clip(1.0 + 0.9 * rng.gamma(2.0, 0.45, n_classes) + 0.6 * makers["premium"][maker], 0.9, 5.0), 1
    )
    cls = {
        "maker": maker,
        "body": body,
        "launch": launch,
        "span": span,
        "entry_price": price,
        "engine": engine,
        "p_auto": np.clip(
            0.15 + 0.5 * (np.log(price) - np.log(21000)) + rng.normal(0, 0.15, n_classes), 0.03, 0.97
        ),
        "p_diesel": rng.uniform(0.1, 0.7, n_classes),
        "p_hybrid": np.where(rng.random(n_classes) < 0.15, rng.uniform(0.2, 0.8, n_classes), 0.01),
        # front-view shape, relative to the body-type template
        "width": rng.uniform(0.66, 0.82, n_classes),
        "height": np.array([BODYTYPES[body_names[b]][1] for b in body]) * rng.uniform(0.92, 1.08, n_classes),
        "roof": np.array([BODYTYPES[body_names[b]][2] for b in body]) * rng.uniform(0.9, 1.1, n_classes),
        "grille_w": makers["grille_w"][maker] * rng.uniform(0.85, 1.15, n_classes),
        "grille_h": makers["grille_h"][maker] * rng.uniform(0.85, 1.15, n_classes),
        "grille_shape": makers["grille_shape"][maker],
        "light_x": rng.uniform(0.3, 0.42, n_classes),
        "light_size": rng.uniform(0.06, 0.11, n_classes),
        "light_aspect": makers["light_aspect"][maker] * rng.uniform(0.85, 1.15, n_classes),
        "wheel": rng.uniform(0.10, 0.16, n_classes),
        "color_tilt": rng.normal(0, 0.6, (n_classes, len(COLORS))),
    }
    return {"makers": makers, "classes": cls, "body_names": body_names}


def _split(n: int, rng: np.random.Generator) -> np.ndarray:
    perm = rng.permutation(n)
    n_test = int(math.ceil(0.1 * n))
    n_val = int(math.ceil(0.2 * (n - n_test)))
    split = np.full(n, "train", dtype="<U5")
    split[perm[:n_test]] = "test"
    split[perm[n_test : n_test + n_val]] = "val"
    return split


def simulate(n: int = 8000, n_classes: int = 101, seed: int = 0) -> dict:
    """Labels, the 13 features and the per-sample image parameters (no pixels)."""
    sch = _schema(n_classes)
    c = sch["classes"]
    rng = np.random.default_rng([seed, 11])
    weights = np.exp(np.random.default_rng([_SCHEMA_SEED, n_classes, 1]).normal(0, 0.5, n_classes))
    y = rng.choice(n_classes, n, p=weights / weights.sum())
    y[:n_classes] = np.arange(n_classes)  # every class present (n >= n_classes is checked by the caller)
    reg = c["launch"][y] + np.floor(rng.random(n) * c["span"][y])
    reg = np.minimum(reg, 2020)
    adv = np.minimum(2021, np.maximum(reg, 2012) + rng.integers(0, 5, n))
    age = adv - reg + rng.random(n)
    miles = np.round(np.maximum(age, 0.1) * 8000 * np.exp(0.45 * rng.normal(size=n)), -1)
    entry = np.round(
        c["entry_price"][y] * 1.02 ** (reg - c["launch"][y]) * np.exp(0.06 * rng.normal(size=n)), -1
    )
    price = (
        np.round(entry * 0.86**age * np.exp(-0.15 * miles / 1e5 + 0.12 * rng.normal(size=n)) / 10) * 10 - 5
    )
    engine = np.round(c["engine"][y] + rng.choice([-0.4, -0.2, 0.0, 0.0, 0.0, 0.2, 0.4], n), 1)
    body = np.where(rng.random(n) < 0.95, c["body"][y], rng.integers(0, len(sch["body_names"]), n))
    seats = np.array([BODYTYPES[sch["body_names"][b]][3] for b in body], float)
    doors = np.array([BODYTYPES[sch["body_names"][b]][4] for b in body], float)
    hatch3 = (np.array(sch["body_names"])[body] == "Hatchback") & (rng.random(n) < 0.2)
    doors[hatch3] = 3
    col_names = list(COLORS)
    base = np.log(np.array([COLORS[k][1] for k in col_names], float))
    logits = base[None, :] + c["color_tilt"][y]
    cum = np.cumsum(_softmax(logits), axis=1)
    color = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), len(col_names) - 1)
    gear = np.where(rng.random(n) < c["p_auto"][y], 1, 0)
    gear[(gear == 1) & (rng.random(n) < 0.25)] = 2
    fu = rng.random(n)
    fuel = np.where(
        fu < c["p_hybrid"][y],
        np.where(rng.random(n) < 0.8, 2, 4),
        np.where(fu < c["p_hybrid"][y] + c["p_diesel"][y], 1, 0),
    )
    fuel[(fuel == 0) & (rng.random(n) < 0.01)] = 3
    x_num = np.stack(
        [adv, rng.integers(1, 13, n), reg, miles, price, seats, doors, entry, engine], axis=1
    ).astype(np.float32)
    x_cat = np.stack([color, body, gear, fuel], axis=1).astype(np.int64)
    img = {  # per-sample image parameters: class prototype + within-class variation + pose
        "y": y,
        "color": color,
        "body": body,
        "width": c["width"][y] * np.exp(0.07 * rng.normal(size=n)),
        "height": c["height"][y] * np.exp(0.07 * rng.normal(size=n)),
        "roof": c["roof"][y] * np.exp(0.1 * rng.normal(size=n)),
        "grille_w": c["grille_w"][y] * np.exp(0.11 * rng.normal(size=n)),
        "grille_h": c["grille_h"][y] * np.exp(0.11 * rng.normal(size=n)),
        "grille_shape": c["grille_shape"][y] * np.exp(0.2 * rng.normal(size=n)),
        "light_x": c["light_x"][y] + 0.03 * rng.normal(size=n),
        "light_size": c["light_size"][y] * np.exp(0.11 * rng.normal(size=n)),
        "light_aspect": c["light_aspect"][y] * np.exp(0.15 * rng.normal(size=n)),
        "wheel": c["wheel"][y] * np.exp(0.07 * rng.normal(size=n)),
        "scale": np.exp(0.11 * rng.normal(size=n)),
        "shift": 0.06 * rng.normal(size=(n, 2)),
        "light": np.exp(0.2 * rng.normal(size=n)),
        "background": rng.uniform(0.55, 0.95, n),
    }
    class_names = [f"Maker{int(c['maker'][k]):02d} Model{k:03d}" for k in range(n_classes)]
    return {
        "x_num": x_num,
        "x_cat": x_cat,
        "y": y.astype(np.int64),
        "split": _split(n, rng),
        "image_params": img,
        "class_names": class_names,
        "cat_levels": {
            "Color": col_names,
            "Bodytype": sch["body_names"],
            "Gearbox": list(GEARBOXES),
            "Fuel_type": list(FUELS),
        },
    }


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _superellipse(g, cx, cy, a, b, p, px):
    """Antialiased coverage of |dx/a|^p + |dy/b|^p <= 1, [B, S, S]."""
    f32 = np.float32
    cx, cy, a, b, p = (np.asarray(v, dtype=f32)[:, None] for v in (cx, cy, a, b, p))
    dx = np.abs((g[None, :] - cx) / a) ** p
    dy = np.abs((g[None, :] - cy) / b) ** p
    r = (dy[:, :, None] + dx[:, None, :]) ** (1.0 / p[:, :, None])
    scale = np.minimum(a, b)[:, :, None] / f32(px)
    return np.clip(f32(0.5) + (f32(1.0) - r) * scale, 0.0, 1.0)


def _render(img: dict, lo: int, hi: int, size: int, seed: int) -> np.ndarray:
    """Front view of a car, ``[B, 3, S, S]`` in [0, 1]; y points down, coordinates in [-1, 1]."""
    rng = np.random.default_rng([seed, 12, lo])
    f32 = np.float32
    p = {k: np.asarray(v[lo:hi]) for k, v in img.items()}
    b = hi - lo
    px = 2.0 / size
    g = ((np.arange(size) + 0.5) * px - 1.0).astype(f32)

    def col(v):  # per-sample value [B] or colour [B, 3] -> broadcastable over [B, 3, S, S]
        v = np.asarray(v, dtype=f32)
        return v[:, None, None, None] if v.ndim == 1 else v[:, :, None, None]

    out = np.empty((b, 3, size, size), dtype=f32)
    # background: a vertical gradient (sky to ground)
    grad = (p["background"][:, None] - 0.25 * (g[None, :] + 1) / 2).astype(f32)  # [B, y]
    out[:] = grad[:, None, :, None]
    s = p["scale"]
    cx, cy = p["shift"][:, 0], 0.1 + p["shift"][:, 1]
    w, h = p["width"] * s, p["height"] * s * 0.8  # half-width / half-height of the body
    rgb = np.array([COLORS[k][0] for k in COLORS], dtype=f32)[p["color"]]  # [B, 3]

    def paint(alpha, colour):
        delta = col(colour) - out
        delta *= alpha[:, None]
        out[...] += delta

    # wheels (below the body's lower corners), then body, windscreen, grille, headlights
    for side in (-1, 1):
        paint(
            _superellipse(
                g,
                cx + side * 0.72 * w,
                cy + 0.92 * h,
                p["wheel"] * s * 0.8,
                p["wheel"] * s,
                np.full(b, 2.5),
                px,
            ),
            np.full((b, 3), 0.05),
        )
    body = _superellipse(g, cx, cy, w, h, np.full(b, 4.0), px)
    shade = (1.0 - 0.25 * np.clip((g[None, :] - (cy - h)[:, None]) / (2 * h)[:, None], 0, 1)).astype(
        f32
    )  # [B, y]
    delta = col(rgb) * shade[:, None, :, None] - out
    delta *= body[:, None]
    out += delta
    roof_h = p["roof"] * h
    paint(
        _superellipse(g, cx, cy - h + roof_h, 0.78 * w, 0.8 * roof_h, np.full(b, 3.0), px),
        np.tile([0.12, 0.16, 0.22], (b, 1)),
    )
    paint(
        _superellipse(g, cx, cy + 0.35 * h, p["grille_w"] * w, p["grille_h"] * h, p["grille_shape"], px),
        np.full((b, 3), 0.1),
    )
    for side in (-1, 1):
        lw = p["light_size"] * s * p["light_aspect"] ** 0.5
        lh = p["light_size"] * s / p["light_aspect"] ** 0.5
        paint(
            _superellipse(g, cx + side * (p["light_x"] * 2 * w), cy + 0.15 * h, lw, lh, np.full(b, 2.0), px),
            np.tile([0.97, 0.96, 0.85], (b, 1)),
        )
    out *= p["light"].astype(f32)[:, None, None, None]
    out += rng.standard_normal(out.shape, dtype=f32) * f32(0.03)
    return np.clip(out, 0.0, 1.0, out=out)


@register_dataset("dvm-synthetic")
def make_dvm_synthetic(
    *,
    n: int = 8000,
    n_classes: int = 101,
    image_size: int = 64,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    **_,
) -> MultimodalData:
    """DVM synthetic replica: car-model classes from a front-view sketch + 13 advert features."""
    if not isinstance(n_classes, int) or n_classes < 2:
        raise DataError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    if not isinstance(n, int) or n < max(10, n_classes):
        raise DataError(f"n must be an integer >= max(10, n_classes={n_classes}), got {n!r}")
    if not isinstance(image_size, int) or not 16 <= image_size <= 1024:
        raise DataError(f"image_size must be an integer in [16, 1024], got {image_size!r}")
    sim = simulate(n, n_classes, seed)
    shape = (n, 3, image_size, image_size)

    def fill(out: np.ndarray, batch: int = max(4, 65_536 // (image_size * image_size))) -> None:
        for lo in range(0, n, batch):
            out[lo : min(n, lo + batch)] = _render(
                sim["image_params"], lo, min(n, lo + batch), image_size, seed
            )

    cache = (default_cache_dir("dvm-synthetic", cache_dir)
             / f"{GENERATOR_VERSION}_n{n}_c{n_classes}_s{seed}_{image_size}px_{source_digest(__file__)}.npy")
    images = render_images(shape, fill, cache)
    y, split = sim["y"], sim["split"]
    levels = sim["cat_levels"]
    provenance = Provenance(
        dataset="dvm-synthetic",
        source="synthetic",
        version=GENERATOR_VERSION,
        checksum=checksum_arrays(sim["x_num"], sim["x_cat"], y, np.asarray(images[: min(n, 32)])),
        protocol_note=f"synthetic replica of the DVM protocol of Hager et al. 2023 ({n_classes} classes, front views, random 72/18/10 split)",
        details={
            "n": n,
            "n_classes": n_classes,
            "seed": seed,
            "image_size": image_size,
            "cat_levels": levels,
            "n_per_split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        },
    )
    return MultimodalData(
        images=images,
        x_num=sim["x_num"],
        x_cat=sim["x_cat"],
        y=y,
        split=split,
        num_names=list(CONTINUOUS),
        cat_names=list(CATEGORICAL),
        cat_cardinalities=[len(levels[c]) for c in CATEGORICAL],
        task="multiclass",
        n_classes=n_classes,
        provenance=provenance,
        ids=np.array([f"dvm-synth-{i:06d}" for i in range(n)]),
        class_names=sim["class_names"],
    )
