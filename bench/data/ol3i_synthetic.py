"""Synthetic OL3I replica: CT-like L3 slices + a 423-column EHR table + 1-year IHD labels.

Deterministic from ``seed`` (numpy ``Generator``); the *structure* of the generator (column list,
per-column prevalences and loadings) is fixed by the generator version (:data:`VERSIONS`) and does
not depend on the seed. The full generative model, with its equations, is in
``datasets/ol3i-synthetic.md``.

Design in one paragraph: each patient has latent variables -- age, sex, smoking, comorbidity
burden ``f``, cardiometabolic risk ``cm``, adiposity ``adp``, healthcare utilisation ``u`` -- that
drive the table (demographics, labs with panel-wise missingness, zero-inflated ATC / ICD-chapter /
CPT-group counts) and the image (body habitus, subcutaneous and visceral fat, muscle size and
density, bone density, aortic calcification). Three further latents are *only* rendered in the
image (visceral fat excess ``e_v``, muscle quality ``e_m``, calcification excess ``e_c``). In
``ol3i-synth-v1`` the 1-year IHD logit is linear in all of them (so concatenation is Bayes-correct);
``ol3i-synth-v2`` (the default) adds a balanced table-only factor ``s`` (shown by the ATC ``C10``
column) and a logit with redundant, modality-unique and synergistic parts, the synergy being the
sign flip ``gamma * e_v * (2 s - 1)`` that no additive model recovers (:data:`RISK_V2`,
:data:`SYNERGY_V2`). :func:`ceilings` / :func:`ceiling_scores` give the Bayes, additive,
table-only and image-only ceilings. The intercept is set so that the positive rate matches OL3I's
355 / 8,139 (4.36 %).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.data import images as _images
from bench.data.base import (
    MultimodalData,
    Provenance,
    checksum_arrays,
    default_cache_dir,
    render_images,
    source_digest,
)
from bench.data.ol3i import window_ct
from bench.errors import DataError
from bench.registry import register_dataset

#: the source files the rendered slices depend on (the cache file name holds their digest)
RENDER_SOURCES = (__file__, _images.__file__)

VERSIONS = {"v1": "ol3i-synth-v1", "v2": "ol3i-synth-v2"}
DEFAULT_VERSION = "v2"
GENERATOR_VERSION = VERSIONS[DEFAULT_VERSION]  # the default generator version
_SCHEMA_SEED = 20230101  # fixes the column structure of this generator version
N_FEATURES = 423
REAL_N = 8139
REAL_SPLIT = {"train": 5227, "val": 1303, "test": 1609}
POSITIVE_RATE = 355 / 8139  # AMF-MedIT appendix A.3: 355 positives of 8,139

# ---------------------------------------------------------------------------------------------
# column schema

_ATC2 = (
    "A01 A02 A03 A04 A05 A06 A07 A08 A09 A10 A11 A12 A13 A14 A16 B01 B02 B03 B05 B06 "
    "C01 C02 C03 C04 C05 C07 C08 C09 C10 D01 D02 D03 D04 D05 D06 D07 D08 D09 D10 D11 "
    "G01 G02 G03 G04 H01 H02 H03 H04 H05 J01 J02 J04 J05 J06 J07 L01 L02 L03 L04 "
    "M01 M02 M03 M04 M05 M09 N01 N02 N03 N04 N05 N06 N07 P01 P02 P03 R01 R02 R03 R05 R06 R07 "
    "S01 S02 S03 V01 V03 V04 V06 V07 V08 V09 V10"
).split()  # 92 ATC level-2 groups
# ICD-10 chapters and their number of blocks (chapter II grouped as malignant / in situ / benign /
# uncertain, so Chapter_II_4 = "neoplasms of uncertain or unknown behaviour", Chapter_IX_3 =
# hypertensive diseases, Chapter_IX_4 = ischaemic heart diseases, as in OL3I).
_ICD_BLOCKS = {
    "I": 21,
    "II": 4,
    "III": 6,
    "IV": 8,
    "V": 11,
    "VI": 11,
    "VII": 11,
    "VIII": 4,
    "IX": 10,
    "X": 10,
    "XI": 10,
    "XII": 8,
    "XIII": 6,
    "XIV": 11,
    "XV": 8,
    "XVI": 10,
    "XVII": 11,
    "XVIII": 13,
    "XIX": 21,
    "XX": 4,
    "XXI": 8,
    "XXII": 2,
}  # 208 blocks
_CPT_GROUPS = {
    "Evaluation": 20,
    "Anesthesia": 13,
    "Surgery": 18,
    "Radiology": 7,
    "Pathology": 14,
    "Medical": 19,
}  # 91
_LABS = ("systolic", "diastolic", "chol_ldl", "chol_hdl", "chol_total", "trig", "gluc", "hba1c", "creatinine")
_DEMOGRAPHICS = ("age_at_scan", "CCI", "bmi")
CATEGORICAL = ("gender", "smoker")
# count columns tied to cardiometabolic risk (cm), comorbidity (f), age (za), and sex (male: +, female: -)
_CM_CODES = {
    "C03": 0.9,
    "C07": 1.0,
    "C08": 0.9,
    "C09": 1.1,
    "C10": 1.2,
    "B01": 1.0,
    "A10": 0.9,
    "C01": 0.6,
    "Chapter_IX_3": 1.2,
    "Chapter_IX_4": 1.0,
    "Chapter_IX_6": 0.7,
    "Chapter_IV_2": 0.9,
    "Chapter_IV_8": 0.6,
    "Medical_2": 0.5,
    "V04": 0.3,
    "B05": 0.3,
}
_F_CODES = {
    "Chapter_II_1": 0.8,
    "Chapter_II_4": 0.6,
    "Chapter_XIV_3": 0.8,
    "B05": 0.7,
    "V06": 0.6,
    "J02": 0.5,
    "J05": 0.5,
    "A12": 0.5,
    "A06": 0.6,
    "A04": 0.6,
    "N02": 0.5,
    "Surgery_1": 0.4,
    "Chapter_XVIII_1": 0.5,
}
_AGE_CODES = {
    "M02": 0.5,
    "S01": 0.6,
    "Chapter_VII_5": 0.6,
    "Chapter_XIII_5": 0.6,
    "G04": 0.7,
    "Evaluation_14": 0.4,
    "Chapter_VI_4": 0.5,
    "S02": 0.3,
}
_MALE_ONLY = {"Chapter_XIV_7"}
_FEMALE_ONLY = {
    "G02",
    "G03",
    "Chapter_XV_1",
    "Chapter_XV_2",
    "Chapter_XV_3",
    "Chapter_XV_4",
    "Chapter_XV_5",
    "Chapter_XV_6",
    "Chapter_XV_7",
    "Chapter_XV_8",
    "Chapter_XIV_9",
}
_COMMON_CODES = {
    "Evaluation_1": 0.75,
    "Evaluation_2": 0.6,
    "Evaluation_14": 0.35,
    "Radiology_1": 0.6,
    "Radiology_2": 0.45,
    "Pathology_1": 0.55,
    "Pathology_2": 0.5,
    "Chapter_XVIII_1": 0.35,
    "Chapter_XXI_1": 0.4,
    "N02": 0.3,
    "A02": 0.2,
    "J01": 0.3,
    "C10": 0.2,
    "C09": 0.18,
    "B01": 0.15,
}


def _count_names() -> list[str]:
    names = list(_ATC2)
    names += [f"Chapter_{ch}_{b}" for ch, nb in _ICD_BLOCKS.items() for b in range(1, nb + 1)]
    names += [f"{g}_{k}" for g, nk in _CPT_GROUPS.items() for k in range(1, nk + 1)]
    return names


def feature_names() -> tuple[list[str], list[str]]:
    """(numeric names, categorical names) of the replica's 423 columns, in output order."""
    labs = [f"{p}{lab}" for lab in _LABS for p in ("exp_wt_lab_", "latest_value_", "num_times_measured_")]
    num = [*_DEMOGRAPHICS, *labs, *_count_names()]
    return num, list(CATEGORICAL)


def _schema() -> dict:
    """Per-count-column parameters, fixed by the generator version (not by the user's seed)."""
    rng = np.random.default_rng(_SCHEMA_SEED)
    names = _count_names()
    j = len(names)
    prev = np.exp(rng.uniform(np.log(0.02), np.log(0.2), j))  # prevalence of any count in the year
    mean_extra = rng.gamma(1.5, 1.0, j)  # mean count beyond the first, for a typical patient
    load = {k: np.zeros(j) for k in ("f", "cm", "za", "male")}
    load["f"] += rng.uniform(0.0, 0.35, j)
    load["za"] += rng.normal(0.0, 0.15, j)
    load["male"] += rng.normal(0.0, 0.15, j)
    index = {n: i for i, n in enumerate(names)}
    for table, key in ((_CM_CODES, "cm"), (_F_CODES, "f"), (_AGE_CODES, "za")):
        for n, w in table.items():
            load[key][index[n]] = w
    for n, p in _COMMON_CODES.items():
        prev[index[n]] = p
    for n in names:
        if n.startswith("Evaluation_"):
            mean_extra[index[n]] += 1.5
    sex_only = np.zeros(j)  # +1 male only, -1 female only
    for n in _MALE_ONLY:
        sex_only[index[n]] = 1
    for n in _FEMALE_ONLY:
        sex_only[index[n]] = -1
    return {"names": names, "prev": prev, "mean_extra": mean_extra, "load": load, "sex_only": sex_only}


# ---------------------------------------------------------------------------------------------
# latent patients, table and labels


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return np.log(p) - np.log1p(-p)


# IHD logit coefficients (per unit of each latent; latents are ~standard normal, sex/smoker 0/1)
RISK = {"za": 0.9, "male": 0.3, "smoker": 0.45, "f": 0.4, "cm": 0.5, "e_c": 0.5, "e_v": 0.35, "e_m": -0.35}

# v2: main effects of the label logit, grouped by which modality shows the latent (see the card).
# redundant (table and image): za, male, adp, cm; table-only: smoker, f, s; image-only: e_m, e_c.
RISK_V2 = {
    "za": 0.6,
    "male": 0.25,
    "adp": 0.15,
    "cm": 0.3,
    "smoker": 0.35,
    "f": 0.25,
    "s": 0.0,
    "e_m": -0.35,
    "e_c": 0.35,
    "e_v": 0.0,
}
# v2 synergy: + gamma * e_v * (2 s - 1), e_v image-only (visceral fat), s table-only (ATC C10 prescriptions)
SYNERGY_V2 = {"gamma": 1.8, "image": "e_v", "table": "s"}
S_PREVALENCE = 0.5  # P(s = 1); balanced, so the sign-flip term has no main effect in the logit
S_COLUMN = "C10"  # the table column that shows s in v2 (any C10 prescription iff s = 1)


def _version(version: str) -> str:
    """The generator version string for ``version`` ("v1", "v2" or the full name)."""
    tag = VERSIONS.get(version, version) if isinstance(version, str) else version
    if tag not in VERSIONS.values():
        raise DataError(
            f"unknown OL3I replica version {version!r}; use one of {sorted(VERSIONS)} (v1 reproduces old leaderboards)"
        )
    return tag


def _draw_latents(rng: np.random.Generator, n: int, tag: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Latent patient variables and the age in years (v1 draws are unchanged bit for bit)."""
    lat: dict[str, np.ndarray] = {}
    raw_age = rng.normal(60.0, 14.0, n)
    age = np.clip(raw_age, 18.0, 95.0)
    # v1 standardises the clipped age; v2 keeps the unclipped draw so za is exactly N(0, 1)
    lat["za"] = (age - 60.0) / 14.0 if tag == VERSIONS["v1"] else (raw_age - 60.0) / 14.0
    lat["male"] = (rng.random(n) < 0.48).astype(float)
    lat["smoker"] = (rng.random(n) < 0.11 + 0.06 * lat["male"]).astype(float)
    mc = lat["male"] - 0.48
    lat["f"] = 0.4 * lat["za"] + math.sqrt(1 - 0.16) * rng.normal(size=n)
    lat["cm"] = 0.45 * lat["za"] + 0.3 * mc + 0.85 * rng.normal(size=n)
    lat["adp"] = rng.normal(size=n)
    lat["u"] = np.exp(0.5 * rng.normal(size=n) + 0.25 * lat["f"])
    for k in ("e_v", "e_m", "e_c"):
        lat[k] = rng.normal(size=n)
    if tag != VERSIONS["v1"]:
        lat["s"] = (rng.random(n) < S_PREVALENCE).astype(float)
    return lat, age


def _image_params(rng: np.random.Generator, lat: dict[str, np.ndarray], n: int) -> dict:
    """What the renderer receives, from the latents (same equations in v1 and v2)."""
    mc = lat["male"] - 0.48
    img = {}
    img["bmi"] = np.clip(27.5 + 5.0 * lat["adp"] + 0.8 * mc + 1.0 * rng.normal(size=n), 15.0, 60.0)
    img["sat"] = 0.03 + 0.12 * _sigmoid(
        1.3 * lat["adp"] - 0.6 * mc + 0.2
    )  # subcutaneous fat, fraction of radius
    img["size"] = np.clip(0.80 + 0.06 * lat["adp"] + 0.04 * mc + 0.02 * rng.normal(size=n), 0.6, 0.95)
    img["vff"] = _sigmoid(
        -0.9 + 0.5 * mc + 0.45 * lat["adp"] + 0.15 * lat["za"] + 0.15 * lat["cm"] + 0.8 * lat["e_v"]
    )
    mh = -0.15 * lat["za"] + 0.3 * mc - 0.15 * lat["f"] + 0.9 * lat["e_m"]  # muscle health
    img["muscle_scale"] = np.exp(0.12 * mh)
    img["muscle_hu"] = 40.0 + 8.0 * mh - 3.0 * lat["adp"]
    cb = 0.25 * lat["za"] + 0.2 * lat["smoker"] + 0.15 * lat["cm"] + 0.9 * lat["e_c"]  # calcification burden
    img["calc_burden"] = cb
    img["n_calc"] = np.minimum(rng.poisson(np.exp(1.0 * cb - 0.2)), 10)
    img["bone_hu"] = 210.0 - 8.0 * lat["za"] + 8.0 * mc + 30.0 * rng.normal(size=n)
    img["contrast"] = rng.random(n) < 0.5
    img["aorta_hu"] = np.where(img["contrast"], rng.uniform(140, 260, n), rng.uniform(30, 50, n))
    img["pose"] = rng.normal(0, 1, (n, 3))  # small shifts / rotation of the layout
    return img


def _logit_no_intercept(lat: dict[str, np.ndarray], tag: str) -> np.ndarray:
    """The label logit without its intercept: additive (v1) or additive + synergy (v2)."""
    if tag == VERSIONS["v1"]:
        return sum(w * lat[k] for k, w in RISK.items())
    logit = sum(w * lat[k] for k, w in RISK_V2.items())
    return logit + SYNERGY_V2["gamma"] * lat[SYNERGY_V2["image"]] * (2.0 * lat[SYNERGY_V2["table"]] - 1.0)


def _draw_labels(rng: np.random.Generator, logit: np.ndarray) -> tuple[np.ndarray, float]:
    """Labels with exactly round(n * 355/8139) positives; the intercept is set per draw."""
    n = len(logit)
    u = rng.random(n)
    threshold = _logit(np.clip(u, 1e-12, 1 - 1e-12)) - logit  # y = 1 iff intercept > threshold
    n_pos = int(round(POSITIVE_RATE * n))
    order = np.sort(threshold)
    if n_pos == 0:
        b0 = order[0] - 1.0
    elif n_pos >= n:
        b0 = order[-1] + 1.0
    else:
        b0 = 0.5 * (order[n_pos - 1] + order[n_pos])
    return (threshold < b0).astype(np.int64), float(b0)


def simulate(n: int = REAL_N, seed: int = 0, version: str = DEFAULT_VERSION) -> dict:
    """Latent variables, the table and the labels (no images). Public for analysis and tests.

    ``version`` is "v1" (additive logit, the old leaderboards) or "v2" (redundancy, uniqueness and
    an image x table synergy; the default). The dict also holds ``version`` (the generator string).
    """
    tag = _version(version)
    rng = np.random.default_rng([seed, 1])
    lat, age = _draw_latents(rng, n, tag)
    mc = lat["male"] - 0.48
    img = _image_params(rng, lat, n)

    # --- table ---
    sch = _schema()
    num_names, cat_names = feature_names()
    cols: dict[str, np.ndarray] = {}
    cols["age_at_scan"] = np.floor(age)
    cols["CCI"] = np.minimum(
        rng.poisson(np.exp(-0.1 + 0.6 * lat["f"] + 0.25 * lat["za"] + 0.2 * lat["cm"])), 18
    ).astype(float)
    logu = np.log(lat["u"])
    panels = {
        "bp": _sigmoid(_logit(0.70) + 0.8 * logu + 0.3 * lat["cm"]),
        "lipid": _sigmoid(_logit(0.40) + 0.8 * logu + 0.5 * lat["cm"] + 0.2 * lat["za"]),
        "bmp": _sigmoid(_logit(0.55) + 0.8 * logu + 0.3 * lat["f"]),
        "a1c": _sigmoid(_logit(0.28) + 0.6 * logu + 0.8 * lat["cm"]),
    }
    measured = {k: rng.random(n) < p for k, p in panels.items()}
    bmi = img["bmi"] + rng.normal(0, 0.8, n)
    bmi[rng.random(n) < 0.08 + 0.2 * (~measured["bp"])] = np.nan
    cols["bmi"] = np.round(bmi, 1)
    z = lambda: rng.normal(size=n)  # noqa: E731
    ldl = 112 + 6 * lat["cm"] + 28 * z()
    hdl = 54 - 7 * mc - 4 * lat["adp"] - 2 * lat["cm"] + 11 * z()
    trig = np.exp(np.log(120) + 0.15 * lat["adp"] + 0.15 * lat["cm"] + 0.45 * z())
    true = {
        "systolic": 125 + 9 * lat["cm"] + 3 * lat["za"] + 10 * z(),
        "diastolic": 76 + 4 * lat["cm"] - 2 * lat["za"] + 7 * z(),
        "chol_ldl": ldl,
        "chol_hdl": np.maximum(hdl, 15),
        "chol_total": ldl + hdl + trig / 5 + 8 * z(),
        "trig": trig,
        "gluc": np.exp(np.log(98) + 0.08 * lat["cm"] + 0.05 * lat["adp"] + 0.15 * z()),
        "hba1c": np.clip(5.6 + 0.45 * lat["cm"] + 0.2 * lat["adp"] + 0.5 * z(), 4.0, 14.0),
        "creatinine": np.exp(
            np.log(0.85) + 0.15 * lat["male"] + 0.1 * lat["f"] + 0.06 * lat["za"] + 0.2 * z()
        ),
    }
    panel_of = {
        "systolic": "bp",
        "diastolic": "bp",
        "chol_ldl": "lipid",
        "chol_hdl": "lipid",
        "chol_total": "lipid",
        "trig": "lipid",
        "gluc": "bmp",
        "creatinine": "bmp",
        "hba1c": "a1c",
    }
    for lab, value in true.items():
        m = measured[panel_of[lab]]
        scale = np.abs(value).mean() * 0.04
        times = np.where(m, 1 + rng.poisson(1.2 * lat["u"]), 0).astype(float)
        exp_wt = np.where(m, value + scale * z(), np.nan)
        latest = np.where(m, exp_wt + scale * 1.5 * z(), np.nan)
        cols[f"exp_wt_lab_{lab}"], cols[f"latest_value_{lab}"], cols[f"num_times_measured_{lab}"] = (
            exp_wt,
            latest,
            times,
        )

    j = len(sch["names"])
    eta = (
        _logit(sch["prev"])[None, :]
        + sch["load"]["f"][None] * lat["f"][:, None]
        + sch["load"]["cm"][None] * lat["cm"][:, None]
        + sch["load"]["za"][None] * lat["za"][:, None]
        + sch["load"]["male"][None] * mc[:, None]
        + 0.7 * logu[:, None]
    )
    any_count = rng.random((n, j)) < _sigmoid(eta)
    sex_only = sch["sex_only"][None, :]
    any_count &= ~((sex_only > 0) & (lat["male"][:, None] == 0)) & ~(
        (sex_only < 0) & (lat["male"][:, None] == 1)
    )
    if tag != VERSIONS["v1"]:  # v2: the table-only factor s decides whether any C10 was prescribed
        any_count[:, sch["names"].index(S_COLUMN)] = lat["s"] == 1
    mean = sch["mean_extra"][None, :] * np.sqrt(lat["u"])[:, None]
    shape = 1.5
    extra = rng.poisson(rng.gamma(shape, mean / shape))
    counts = np.where(any_count, 1 + extra, 0).astype(float)
    for k, name in enumerate(sch["names"]):
        cols[name] = counts[:, k]

    x_num = np.stack([cols[c] for c in num_names], axis=1).astype(np.float32)
    x_cat = np.stack([lat["male"], lat["smoker"]], axis=1).astype(np.int64)

    # --- label ---
    logit = _logit_no_intercept(lat, tag)
    y, b0 = _draw_labels(rng, logit)
    split = _stratified_split(y, rng)
    return {
        "latents": lat,
        "image_params": img,
        "x_num": x_num,
        "x_cat": x_cat,
        "num_names": num_names,
        "cat_names": cat_names,
        "y": y,
        "split": split,
        "risk_logit": logit + b0,
        "intercept": b0,
        "version": tag,
    }


# ---------------------------------------------------------------------------------------------
# ceilings: the best AUC each information set allows (see "Ceilings" in datasets/ol3i-synthetic.md)

CEILINGS = ("bayes", "additive", "table_only", "image_only")
# Standard-normal basis of the continuous latents: za, f = 0.4 za + sqrt(0.84) zf,
# cm = 0.45 za + 0.3 m + 0.85 zcm, adp, e_v, e_m, e_c and the bone-density noise.
_BASIS = ("za", "zf", "zcm", "adp", "e_v", "e_m", "e_c", "e_bone")
_GH_NODES = 32
_ADDITIVE_N = 200_000
_ADDITIVE_SEED = 20240601
# large_sample_ceilings(version) with its defaults (n = 200,000, seed 12345); a test re-derives them
LARGE_SAMPLE_CEILINGS = {
    "ol3i-synth-v1": {"bayes": 0.8519, "additive": 0.8519, "table_only": 0.8207, "image_only": 0.801},
    "ol3i-synth-v2": {"bayes": 0.9023, "additive": 0.8207, "table_only": 0.7013, "image_only": 0.7864},
}


def _risk_coefs(tag: str) -> tuple[dict[str, float], float]:
    """(main-effect coefficients, synergy gamma) of a generator version."""
    if tag == VERSIONS["v1"]:
        return dict(RISK), 0.0
    return dict(RISK_V2), float(SYNERGY_V2["gamma"])


def _configs(tag: str) -> list[tuple[float, float, float]]:
    """The discrete latent configurations (male, smoker, s); v1 has no s (fixed at 0)."""
    ss = (0.0,) if tag == VERSIONS["v1"] else (0.0, 1.0)
    return [(m, sm, s) for m in (0.0, 1.0) for sm in (0.0, 1.0) for s in ss]


def _log_prior(tag: str, d: tuple[float, float, float]) -> float:
    m, sm, s = d
    p_sm = 0.11 + 0.06 * m
    lp = math.log(0.48 if m else 0.52) + math.log(p_sm if sm else 1 - p_sm)
    if tag != VERSIONS["v1"]:
        lp += math.log(S_PREVALENCE if s else 1 - S_PREVALENCE)
    return lp


def _eta_affine(tag: str, d: tuple[float, float, float], b0: float) -> tuple[float, np.ndarray]:
    """The label logit in configuration ``d`` as ``c + w . z`` over :data:`_BASIS`."""
    beta, gamma = _risk_coefs(tag)
    m, sm, s = d
    mc = m - 0.48
    b = lambda k: beta.get(k, 0.0)  # noqa: E731
    c = b0 + b("male") * m + b("smoker") * sm + b("s") * s + 0.3 * mc * b("cm")
    w = np.zeros(len(_BASIS))
    w[0] = b("za") + 0.4 * b("f") + 0.45 * b("cm")
    w[1] = math.sqrt(0.84) * b("f")
    w[2] = 0.85 * b("cm")
    w[3] = b("adp")
    w[4] = b("e_v") + gamma * (2.0 * s - 1.0)
    w[5] = b("e_m")
    w[6] = b("e_c")
    return c, w


def _obs_affine(info: str, d: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """What an information set observes, as ``h(d) + H z``: table latents or image parameters."""
    m, sm, _ = d
    mc = m - 0.48
    e = np.eye(len(_BASIS))
    za, zf, zcm, adp, ev, em, ec, eb = e
    f = 0.4 * za + math.sqrt(0.84) * zf
    cm = 0.45 * za + 0.85 * zcm  # + 0.3 mc in h
    if info == "table":  # za, f, cm, adp
        return np.array([0.0, 0.0, 0.3 * mc, 0.0]), np.stack([za, f, cm, adp])
    # image: logit(vff), muscle health, adp, calcification burden, trabecular bone HU
    h = np.array(
        [-0.9 + 0.5 * mc + 0.15 * 0.3 * mc, 0.3 * mc, 0.0, 0.2 * sm + 0.15 * 0.3 * mc, 210.0 + 8.0 * mc]
    )
    rows = [
        0.45 * adp + 0.15 * za + 0.15 * cm + 0.8 * ev,
        -0.15 * za - 0.15 * f + 0.9 * em,
        adp,
        0.25 * za + 0.15 * cm + 0.9 * ec,
        -8.0 * za + 30.0 * eb,
    ]
    return h, np.stack(rows)


def _observed(sim: dict, info: str) -> np.ndarray:
    """The observed values of an information set for every sample, ``[n, k]``."""
    lat, img = sim["latents"], sim["image_params"]
    if info == "table":
        return np.stack([lat["za"], lat["f"], lat["cm"], lat["adp"]], axis=1)
    return np.stack(
        [
            _logit(np.asarray(img["vff"], dtype=np.float64)),
            np.log(img["muscle_scale"]) / 0.12,
            lat["adp"],
            img["calc_burden"],
            img["bone_hu"],
        ],
        axis=1,
    )


def _gauss_sigmoid(mean: np.ndarray, var: float) -> tuple[np.ndarray, np.ndarray]:
    """(E sigma(X), E sigma(-X)) for X ~ N(mean, var), by Gauss-Hermite quadrature."""
    from scipy.special import expit

    x, w = np.polynomial.hermite.hermgauss(_GH_NODES)
    w = w / math.sqrt(math.pi)
    t = mean[:, None] + math.sqrt(2.0 * max(var, 0.0)) * x[None, :]
    return expit(t) @ w, expit(-t) @ w


def _posterior_logit(sim: dict, info: str) -> np.ndarray:
    """logit P(y = 1 | information set) for every sample, exact up to quadrature.

    ``table``: all table-visible latents (za, male, smoker, f, cm, adp, s) observed, e_v, e_m, e_c
    integrated out. ``image``: the image parameters observed (they determine sex, adp, logit vff,
    muscle health, calcification burden, bone HU), everything else integrated out; the discrete
    latents the image does not show (smoker, s) by their posterior weights.
    """
    tag, lat, b0 = sim["version"], sim["latents"], sim["intercept"]
    n = len(sim["y"])
    o = _observed(sim, info)
    own = (lat["male"], lat["smoker"], lat.get("s", np.zeros(n)))
    known = (0, 1, 2) if info == "table" else (0,)
    configs = _configs(tag)
    lpost = np.full((len(configs), n), -np.inf)
    e1, e0 = np.zeros((len(configs), n)), np.zeros((len(configs), n))
    for j, d in enumerate(configs):
        rows = np.flatnonzero(np.all([own[i] == d[i] for i in known], axis=0))
        h, hm = _obs_affine(info, d)
        s_inv = np.linalg.inv(hm @ hm.T)
        gain = hm.T @ s_inv  # [basis, k]: E[z | o] = gain (o - h)
        r = o[rows] - h[None, :]
        c, w = _eta_affine(tag, d, b0)
        var = float(w @ (np.eye(len(_BASIS)) - gain @ hm) @ w)
        e1[j, rows], e0[j, rows] = _gauss_sigmoid(c + r @ (gain.T @ w), var)
        lpost[j, rows] = _log_prior(tag, d) - 0.5 * np.einsum("ik,kl,il->i", r, s_inv, r)
    post = np.exp(lpost - lpost.max(axis=0))
    return np.log((post * e1).sum(axis=0)) - np.log((post * e0).sum(axis=0))


def _additive_features(lat: dict[str, np.ndarray], tag: str) -> np.ndarray:
    """Main-effects design: intercept, each binary latent, and x, x^2, |x| of each continuous one."""
    beta, _ = _risk_coefs(tag)
    cols = [np.ones(len(lat["za"]))]
    for k in ("male", "smoker", "s", "za", "f", "cm", "adp", "e_v", "e_m", "e_c"):
        if k not in lat or (k == "s" and tag == VERSIONS["v1"]):
            continue
        x = lat[k]
        cols += [x] if k in ("male", "smoker", "s") else [x, x * x, np.abs(x)]
    return np.stack(cols, axis=1)


@lru_cache(maxsize=16)
def _additive_coefs(tag: str, b0: float) -> np.ndarray:
    """Population main-effects logistic fit: IRLS on a large fixed draw with targets sigma(logit)."""
    from scipy.special import expit, log_expit

    rng = np.random.default_rng([_ADDITIVE_SEED, 4])
    lat, _ = _draw_latents(rng, _ADDITIVE_N, tag)
    p = expit(_logit_no_intercept(lat, tag) + b0)
    x = _additive_features(lat, tag)

    def loglik(c):
        t = x @ c
        return float(p @ log_expit(t) + (1 - p) @ log_expit(-t))

    coef = np.zeros(x.shape[1])
    coef[0] = _logit(p.mean())
    ll = loglik(coef)
    for _ in range(100):  # Newton with step halving (the expected log-likelihood is concave)
        q = expit(x @ coef)
        hess = (x * (q * (1 - q))[:, None]).T @ x + 1e-9 * len(p) * np.eye(x.shape[1])
        step = np.linalg.solve(hess, x.T @ (p - q))
        for _ in range(30):
            new_ll = loglik(coef + step)
            if new_ll >= ll - 1e-12 * abs(ll):
                break
            step /= 2
        coef, ll = coef + step, new_ll
        if np.max(np.abs(step)) < 1e-9:
            break
    return coef


def ceiling_scores(sim: dict) -> dict[str, np.ndarray]:
    """Per-sample logits of the four ceilings for a :func:`simulate` draw, float64 ``[n]`` each.

    ``bayes``: the true logit; ``additive``: the best main-effects logistic model of the latents;
    ``table_only`` / ``image_only``: logit P(y = 1 | what that modality's generator sees). Rank
    them like model logits (e.g. write them as the predictions of ceiling rows).
    """
    if not isinstance(sim, dict) or not {"latents", "image_params", "intercept", "y"} <= set(sim):
        raise DataError(
            "ceilings need the dict returned by simulate(n, seed, version); pass that dict, not a MultimodalData"
        )
    sim = {**sim, "version": _version(sim.get("version", VERSIONS["v1"]))}
    tag = sim["version"]
    return {
        "bayes": np.asarray(sim["risk_logit"], dtype=np.float64),
        "additive": _additive_features(sim["latents"], tag) @ _additive_coefs(tag, float(sim["intercept"])),
        "table_only": _posterior_logit(sim, "table"),
        "image_only": _posterior_logit(sim, "image"),
    }


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Rank (Mann-Whitney) AUC with midranks; None when a class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return None
    r = rankdata(score)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def ceilings(sim: dict, idx=None) -> dict[str, float | None]:
    """AUC of each ceiling on the samples ``idx`` of a :func:`simulate` draw.

    ``idx``: None (all samples), a split name ("train", "val", "test"), a boolean mask or indices.
    Returns {"bayes", "additive", "table_only", "image_only"} -> AUC (None when a class is absent).
    """
    scores = ceiling_scores(sim)
    y = np.asarray(sim["y"])
    if idx is None:
        sel = np.arange(len(y))
    elif isinstance(idx, str):
        if idx not in ("train", "val", "test"):
            raise DataError(
                f"unknown split {idx!r} for ceilings; use 'train', 'val', 'test', a mask or indices"
            )
        sel = np.flatnonzero(np.asarray(sim["split"]) == idx)
    else:
        sel = np.asarray(idx)
        if sel.dtype == bool:
            if sel.shape != y.shape:
                raise DataError(
                    f"ceilings mask has shape {sel.shape}, expected {y.shape}; pass one bool per sample"
                )
            sel = np.flatnonzero(sel)
        elif sel.dtype.kind not in "iu" or (sel.size and (sel.min() < -len(y) or sel.max() >= len(y))):
            raise DataError(
                f"ceilings idx must be integer indices in [0, {len(y)}) or a bool mask; got dtype {sel.dtype}"
            )
    return {k: _auc(y[sel], v[sel]) for k, v in scores.items()}


def large_sample_ceilings(
    version: str = DEFAULT_VERSION, n: int = 200_000, seed: int = 12345
) -> dict[str, float]:
    """Ceiling AUCs on a large draw of the generator (latents, image parameters, labels; no table).

    The numbers in the dataset card's ceiling table come from this function with its defaults.
    """
    tag = _version(version)
    if not isinstance(n, int) or n < 1000:
        raise DataError(f"large_sample_ceilings needs an integer n >= 1000, got {n!r}")
    sim = draw_population(np.random.default_rng([seed, 3]), n, tag)
    return {k: round(v, 4) for k, v in ceilings(sim).items()}


def draw_population(rng: np.random.Generator, n: int, tag: str) -> dict:
    """Latents, image parameters, labels and the known risk logit of ``n`` patients, without images:
    what :func:`ceiling_scores` reads (a large draw for the card's ceilings, or a test's brute force)."""
    lat, _ = _draw_latents(rng, n, tag)
    img = _image_params(rng, lat, n)
    logit = _logit_no_intercept(lat, tag)
    y, b0 = _draw_labels(rng, logit)
    return {"latents": lat, "image_params": img, "y": y, "risk_logit": logit + b0, "intercept": b0, "version": tag}


def _split_sizes(n: int) -> dict[str, int]:
    total = sum(REAL_SPLIT.values())
    raw = {k: n * v / total for k, v in REAL_SPLIT.items()}
    sizes = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - sizes[k], reverse=True)[: n - sum(sizes.values())]:
        sizes[k] += 1
    return sizes


def _stratified_split(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Release proportions 5,227 / 1,303 / 1,609, positives spread proportionally."""
    n = len(y)
    sizes = _split_sizes(n)
    pos_sizes = _split_sizes(int(y.sum()))
    split = np.empty(n, dtype="<U5")
    for cls, want in ((1, pos_sizes), (0, {k: sizes[k] - pos_sizes[k] for k in sizes})):
        idx = rng.permutation(np.flatnonzero(y == cls))
        start = 0
        for name in ("train", "val", "test"):
            split[idx[start : start + want[name]]] = name
            start += want[name]
    return split


# ---------------------------------------------------------------------------------------------
# image rendering (HU, then window_ct exactly like the real adapter)


def _ellipse(gx, gy, cx, cy, a, b, px):
    """Antialiased coverage of axis-aligned ellipses, [B, S, S]; a linear ramp one pixel wide."""
    f32 = np.float32
    cx, cy, a, b = (np.asarray(v, dtype=f32) for v in (cx, cy, a, b))
    dx = np.square((gx[None, :] - cx[:, None]) / a[:, None])
    dy = np.square((gy[None, :] - cy[:, None]) / b[:, None])
    r = dy[:, :, None] + dx[:, None, :]
    np.sqrt(r, out=r)
    scale = (np.minimum(a, b) / f32(px))[:, None, None]
    # 0.5 + (1 - r) * scale, clipped to [0, 1], computed in place
    r -= f32(1.0)
    r *= -scale
    r += f32(0.5)
    return np.clip(r, 0.0, 1.0, out=r)


def _paint(hu, alpha, value):
    """Alpha-composite a per-patient (or per-pixel) HU value over ``hu``, in place."""
    delta = np.asarray(value, dtype=np.float32) - hu
    delta *= alpha
    hu += delta


def _wave_field(rng_arrays, gx, gy):
    """Sum of K random plane waves, separable into two batched matmuls; ~N(0, 1) per pixel."""
    kx, ky, ph = (np.asarray(v, dtype=np.float32) for v in rng_arrays)  # [B, K]
    k = kx.shape[1]
    cx = np.cos(kx[:, :, None] * gx[None, None, :] + ph[:, :, None])
    sx = np.sin(kx[:, :, None] * gx[None, None, :] + ph[:, :, None])
    cy = np.cos(ky[:, :, None] * gy[None, None, :])
    sy = np.sin(ky[:, :, None] * gy[None, None, :])
    field = np.einsum("bky,bkx->byx", cy, cx) - np.einsum("bky,bkx->byx", sy, sx)
    return field * np.float32(math.sqrt(2.0 / k))


def _waves(rng: np.random.Generator, b: int, k: int, kmin: float, kmax: float):
    """Random plane waves: isotropic directions, wave numbers in [kmin, kmax] (radians per unit)."""
    mag, ang = rng.uniform(kmin, kmax, (b, k)), rng.uniform(0, np.pi, (b, k))
    return mag * np.cos(ang), mag * np.sin(ang), rng.uniform(0, 2 * np.pi, (b, k))


def _render(img: dict, lo: int, hi: int, size: int, seed: int) -> np.ndarray:
    """Render patients ``lo:hi`` as ``[B, 1, S, S]`` float32 in [0, 1] (HU, then :func:`window_ct`).

    Coordinates span [-1, 1] in both axes; x to the image right (the patient's left, radiological
    convention), y downwards (posterior). Every shape has antialiased edges one pixel wide, so
    the same patient renders consistently at any ``size``.
    """
    from scipy.special import ndtri

    rng = np.random.default_rng([seed, 2, lo])
    b = hi - lo
    f32 = np.float32
    p = {
        k: np.asarray(v[lo:hi], dtype=f32 if np.asarray(v).dtype.kind == "f" else None)
        for k, v in img.items()
    }
    px = 2.0 / size
    g = ((np.arange(size) + 0.5) * px - 1.0).astype(f32)
    col = lambda v: np.asarray(v, dtype=f32)[:, None, None]  # noqa: E731  per-patient value -> [B, 1, 1]
    pose = p["pose"]
    ox, oy = 0.03 * pose[:, 0], -0.06 + 0.03 * pose[:, 1]
    hu = np.full((b, size, size), -1000.0, dtype=f32)
    # patient couch: a thin curved band below the body
    a_body = p["size"]
    b_body = a_body * (0.70 + 0.04 * np.tanh((p["bmi"] - 27.5) / 5))
    couch_y = oy + b_body + 0.06
    curve = couch_y[:, None] - 0.05 * g[None, :] ** 2  # [B, x]
    band = np.clip(0.5 + (0.012 - np.abs(g[None, :, None] - curve[:, None, :])) / px, 0, 1)
    _paint(hu, band, 60.0)
    # body outline filled with subcutaneous fat, then the abdominal wall muscle, then the cavity
    _paint(hu, _ellipse(g, g, ox, oy, a_body, b_body, px), col(-100.0 + 8.0 * rng.normal(size=b)))
    a_wall, b_wall = a_body * (1 - p["sat"]), b_body * (1 - 1.3 * p["sat"])
    _paint(hu, _ellipse(g, g, ox, oy, a_wall, b_wall, px), col(p["muscle_hu"]))
    wall = 0.035 * p["muscle_scale"] * a_body
    a_cav, b_cav = a_wall - wall, b_wall - wall
    cav = _ellipse(g, g, ox, oy, a_cav, b_cav, px)
    _paint(hu, cav, col(30.0 + 5.0 * rng.normal(size=b)))  # bowel and organs
    # visceral fat: a smooth random field thresholded so that ~vff of the cavity is fat
    field = _wave_field(_waves(rng, b, 16, 4.0, 11.0), g, g)
    thr = col(ndtri(np.clip(p["vff"], 1e-3, 1 - 1e-3)))
    fat = np.clip(0.5 + (thr - field) / 0.25, 0, 1) * cav
    _paint(hu, fat, -95.0)
    gas = np.clip((_wave_field(_waves(rng, b, 12, 9.0, 16.0), g, g) - 2.0) / 0.2, 0, 1) * cav * (1 - fat)
    _paint(hu, gas, -850.0)  # bowel gas
    # retroperitoneum: spine, psoas and paraspinal muscles, aorta and IVC
    u = a_cav  # anatomy scales with the cavity width
    ms = p["muscle_scale"] * u
    vx = ox + 0.015 * pose[:, 2]
    rv = 0.10 * u  # vertebral body radius
    vy = oy + b_cav - 0.36 * u  # its centre, well inside the posterior cavity
    for side in (-1.0, 1.0):
        _paint(
            hu,
            _ellipse(g, g, vx + side * (rv + 0.075 * ms), vy + 0.01 * u, 0.075 * ms, 0.09 * ms, px),
            col(p["muscle_hu"]),
        )
        _paint(
            hu,
            _ellipse(g, g, vx + side * 0.15 * ms, vy + rv + 0.11 * u, 0.13 * ms, 0.11 * ms, px),
            col(p["muscle_hu"]),
        )
    _paint(hu, _ellipse(g, g, vx, vy + rv + 0.10 * u, 0.03 * u, 0.12 * u, px), 550.0)  # posterior elements
    _paint(hu, _ellipse(g, g, vx, vy, rv, 0.85 * rv, px), 750.0)  # cortical shell
    shell = 0.18 * rv
    _paint(
        hu, _ellipse(g, g, vx, vy, rv - shell, 0.85 * rv - shell, px), col(p["bone_hu"])
    )  # trabecular bone
    _paint(hu, _ellipse(g, g, vx, vy + 0.85 * rv + 0.04 * u, 0.035 * u, 0.03 * u, px), 15.0)  # spinal canal
    ax, ay, ra = vx + 0.07 * u, vy - rv - 0.055 * u, 0.05 * u
    _paint(hu, _ellipse(g, g, vx - 0.09 * u, ay + 0.01 * u, 0.055 * u, 0.035 * u, px), 40.0)  # IVC
    _paint(hu, _ellipse(g, g, ax, ay, ra, ra, px), col(p["aorta_hu"]))
    # aortic wall calcifications: Gaussian spots, widened to >= ~1 pixel with their integral kept
    m = 10
    theta = rng.uniform(0, 2 * np.pi, (b, m))
    sx = ax[:, None] + ra[:, None] * np.cos(theta)
    sy = ay[:, None] + ra[:, None] * np.sin(theta)
    sigma = 0.008 * rng.uniform(0.7, 1.4, (b, m))
    sig_eff = np.sqrt(sigma**2 + (0.45 * px) ** 2)
    amp = (
        rng.uniform(500, 1000, (b, m))
        * (sigma / sig_eff) ** 2
        * (np.arange(m)[None, :] < p["n_calc"][:, None])
    )
    inv = (-0.5 / sig_eff**2)[:, :, None]
    gxs = (np.exp(inv * (g[None, None, :] - sx[:, :, None]) ** 2) * amp[:, :, None]).astype(f32)
    gys = np.exp(inv * (g[None, None, :] - sy[:, :, None]) ** 2).astype(f32)
    hu += np.einsum("bmy,bmx->byx", gys, gxs)
    # CT noise (its level after area-downsampling a 512x512 slice to this size, plus a floor)
    hu += rng.standard_normal(hu.shape, dtype=f32) * f32(3.0 + 20.0 * size / 512.0)
    return window_ct(hu)[:, None]


@register_dataset("ol3i-synthetic")
def make_ol3i_synthetic(
    *,
    n: int = REAL_N,
    image_size: int = 64,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    version: str = DEFAULT_VERSION,
    **_,
) -> MultimodalData:
    """OL3I synthetic replica: CT-like L3 slices + 423 EHR columns, 1-year IHD (~4.4 %).

    ``version``: "v2" (default; redundancy, uniqueness and an image x table synergy) or "v1"
    (additive logit; reproduces old leaderboards bit for bit). ``provenance.details["ceilings"]``
    holds the ceiling AUCs on this draw's test split and the version's large-sample ceilings.
    """
    tag = _version(version)
    if not isinstance(n, int) or n < 30:
        raise DataError(
            f"n must be an integer >= 30 for the OL3I replica (it needs positives in every split), got {n!r}"
        )
    if not isinstance(image_size, int) or not 16 <= image_size <= 1024:
        raise DataError(f"image_size must be an integer in [16, 1024], got {image_size!r}")
    sim = simulate(n, seed, tag)
    shape = (n, 1, image_size, image_size)

    def fill(out: np.ndarray, batch: int = max(8, 400_000 // (image_size * image_size))) -> None:
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            out[lo:hi] = _render(sim["image_params"], lo, hi, image_size, seed)

    cache = (default_cache_dir("ol3i-synthetic", cache_dir)
             / f"{tag}_n{n}_s{seed}_{image_size}px_{source_digest(*RENDER_SOURCES)}.npy")
    images = render_images(shape, fill, cache)
    y, split = sim["y"], sim["split"]
    provenance = Provenance(
        dataset="ol3i-synthetic",
        source="synthetic",
        version=tag,
        checksum=checksum_arrays(sim["x_num"], sim["x_cat"], y, np.asarray(images[: min(n, 64)])),
        protocol_note="synthetic replica of OL3I 1-year IHD (423 EHR columns, L3 CT-like slices); see datasets/ol3i-synthetic.md",
        details={
            "n": n,
            "seed": seed,
            "image_size": image_size,
            "intercept": sim["intercept"],
            "n_per_split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
            "positives_per_split": {s: int(y[split == s].sum()) for s in ("train", "val", "test")},
            "ceilings": {
                "test": {k: (None if v is None else round(v, 4)) for k, v in ceilings(sim, "test").items()},
                "large_sample": dict(LARGE_SAMPLE_CEILINGS[tag]),
                "definition": "AUC of the Bayes logit, best additive model, P(y|table latents), P(y|image parameters); see datasets/ol3i-synthetic.md",
            },
        },
    )
    return MultimodalData(
        images=images,
        x_num=sim["x_num"],
        x_cat=sim["x_cat"],
        y=y,
        split=split,
        num_names=sim["num_names"],
        cat_names=sim["cat_names"],
        cat_cardinalities=[2, 2],
        task="binary",
        n_classes=2,
        provenance=provenance,
        ids=np.array([f"synth-{i:06d}" for i in range(n)]),
        class_names=["no IHD within 1 year", "IHD within 1 year"],
    )
