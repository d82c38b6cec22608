"""Image-tabular contrastive pretraining (AMF-MedIT 3.1 and eq. 11; Hager et al. 2023).

Projection heads map both embeddings to a shared space; the ITC loss pulls matching image-tabular
pairs together and pushes the others apart, averaged over both directions, temperature T = 0.1.
Augmentations follow appendix A.2 in spirit: each image is augmented with probability 0.95 (random
flip, small shift, intensity jitter) and 30% of tabular cells are corrupted by values drawn from
other training rows. The pretrained encoders are cached on disk, keyed by everything that affects
them, so a suite pretrains once per (dataset, encoder pair, budget).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.executor import process_info
from bench.fast_paths import NUMERICS, fast_tabular_encoder, image_batch, place_image_encoder
from bench.registry import get
from bench.train import EVAL_BATCH

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench"))


@dataclass
class EncoderSpec:
    """How to build one encoder: registry kind + name + keyword arguments."""

    kind: str
    name: str
    kwargs: dict

    def build(self) -> nn.Module:
        module = get(self.kind, self.name)(**self.kwargs)
        return fast_tabular_encoder(module) if self.kind == "tabular_encoder" else module

    def key(self) -> dict:
        """What the cached pretrained weights depend on, the encoder's source code included (an edited
        plug-in never reuses weights trained by its old code)."""
        from bench.fingerprint import plugin_identity

        return {"kind": self.kind, "name": self.name, "kwargs": self.kwargs,
                "source": plugin_identity(self.kind, self.name)["source"]}


def projection_head(d_in: int, d_out: int) -> nn.Sequential:
    """Linear-ReLU-Linear, as in the official AMF projectors (no BatchNorm)."""
    return nn.Sequential(nn.Linear(d_in, d_in), nn.ReLU(), nn.Linear(d_in, d_out))


def itc_loss(z_img: Tensor, z_tab: Tensor, temperature: float) -> Tensor:
    """Eq. 11: symmetric InfoNCE over the batch; L_ITC = (L_i2t + L_t2i) / 2."""
    z_img = F.normalize(z_img, dim=-1)
    z_tab = F.normalize(z_tab, dim=-1)
    logits = z_img @ z_tab.T / temperature
    target = torch.arange(len(z_img), device=z_img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def augment_images(x: Tensor, gen: torch.Generator, p: float = 0.95) -> Tensor:
    b = x.shape[0]
    apply = torch.rand(b, generator=gen) < p
    flip = apply & (torch.rand(b, generator=gen) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    shift = int(max(1, x.shape[-1] // 16))
    dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
    rolled = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    x = torch.where(apply[:, None, None, None], rolled, x)
    gain = 1 + 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * apply[:, None, None, None]
    return (x * gain).clamp(0, 1)


def corrupt_tabular(x_num: Tensor, x_cat: Tensor, pool_num: Tensor, pool_cat: Tensor, gen: torch.Generator, rate: float = 0.3):
    """Replace a fraction of cells with the same column's value from random training rows."""
    b = x_num.shape[0]
    rows = torch.randint(0, len(pool_num), (b,), generator=gen)
    mask_num = torch.rand(x_num.shape, generator=gen) < rate
    x_num = torch.where(mask_num, pool_num[rows], x_num)
    if x_cat.shape[1]:
        mask_cat = torch.rand(x_cat.shape, generator=gen) < rate
        x_cat = torch.where(mask_cat, pool_cat[rows], x_cat)
    return x_num, x_cat


#: the default budget must beat chance by this margin on held-out pairs (the "encoders learned" rule)
ITC_MARGIN = 0.5
TOP1_FACTOR = 5.0


@contextlib.contextmanager
def _eval_mode(*modules: nn.Module):
    """Every module in eval mode for the block, then back to the mode it had (the held-out measures)."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(modules, was, strict=True):
            m.train(w)


@torch.no_grad()
def heldout_contrastive(img_enc: nn.Module, tab_enc: nn.Module, head_img: nn.Module, head_tab: nn.Module,
                        images, x_num: np.ndarray, x_cat: np.ndarray, rows: np.ndarray, batch_size: int,
                        temperature: float, device) -> dict:
    """What contrastive pretraining learned, on pairs it never trained on (AMF-MedIT eq. 11 on held-out rows).

    ``rows`` (the validation split; never the test split) are cut into full batches of ``batch_size``
    without augmentation; returns the mean ITC loss (chance: ln B, what identical embeddings give) and
    image→table top-1 retrieval within a batch (chance: 1/B).
    """
    n_full = (len(rows) // batch_size) * batch_size
    losses, hits = [], []
    with _eval_mode(img_enc, tab_enc, head_img, head_tab):
        for start in range(0, n_full, batch_size):
            idx = rows[start : start + batch_size]
            xc = torch.as_tensor(x_cat[idx]).to(device)
            z_img = head_img(img_enc(image_batch(images[idx], device)).pooled)
            z_tab = head_tab(tab_enc(torch.as_tensor(x_num[idx]).to(device), xc if xc.shape[1] else None).pooled)
            losses.append(itc_loss(z_img, z_tab, temperature).item())
            sim = F.normalize(z_img, dim=-1) @ F.normalize(z_tab, dim=-1).T
            hits.append((sim.argmax(1).cpu() == torch.arange(len(idx))).float().mean().item())
    if not losses:
        return {"itc": None, "top1": None, "batches": 0}
    return {"itc": float(np.mean(losses)), "top1": float(np.mean(hits)), "batches": len(losses)}


def learned(heldout: dict) -> bool:
    """The rule of the default budget: held-out ITC <= ln B - 0.5, or top-1 retrieval >= 5/B."""
    b = heldout.get("batch_size")
    if not b or heldout.get("itc") is None:
        return False
    return heldout["itc"] <= math.log(b) - ITC_MARGIN or heldout["top1"] >= TOP1_FACTOR / b


class SupervisedHeads(nn.Module):
    """The optional supervised term of pretraining (``pretrain.supervised``), on training labels only.

    ``image`` / ``tabular``: a linear head on one encoder's pooled features; ``joint``: a one-hidden-layer
    MLP on both pooled features together, which can express an image x table interaction. Their loss
    (class-balanced BCE, or cross-entropy for several classes) is added to the ITC loss with ``weight``.
    NOTE[DIFF]: AMF-MedIT pretrains without labels (3.1, eq. 11); a few CPU epochs of ITC alone leave
    features that keep what the two modalities share and drop what only one shows (the ``cpu`` budget's
    published probes), so the ``cpu`` budget adds this warm-up. The heads are discarded afterwards; no
    validation or test label is ever seen (the held-out measure below only reads validation labels).
    """

    KINDS = ("image", "tabular", "joint")

    def __init__(self, d_img: int, d_tab: int, n_out: int, heads, hidden: int = 128):
        super().__init__()
        unknown = sorted(set(heads) - set(self.KINDS))
        if unknown or not heads:
            raise ValueError(f"pretrain.supervised.heads {list(heads)}: use one or more of {list(self.KINDS)}")
        self.n_out = n_out
        dims = {"image": d_img, "tabular": d_tab}
        self.heads = nn.ModuleDict({k: nn.Linear(dims[k], n_out) for k in heads if k != "joint"})
        if "joint" in heads:
            self.heads["joint"] = nn.Sequential(nn.Linear(d_img + d_tab, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, h_img: Tensor, h_tab: Tensor) -> dict[str, Tensor]:
        inputs = {"image": h_img, "tabular": h_tab, "joint": torch.cat([h_img, h_tab], dim=1)}
        return {k: head(inputs[k]) for k, head in self.heads.items()}

    def loss(self, h_img: Tensor, h_tab: Tensor, y: Tensor, pos_weight: Tensor | None) -> Tensor:
        outs = self(h_img, h_tab)
        if self.n_out == 1:
            terms = [F.binary_cross_entropy_with_logits(o[:, 0], y.float(), pos_weight=pos_weight) for o in outs.values()]
        else:
            terms = [F.cross_entropy(o, y.long()) for o in outs.values()]
        return torch.stack(terms).mean()


class TabularDecoder(nn.Module):
    """Denoising reconstruction of the clean table from the tabular encoder's pooled features
    (``pretrain.reconstruct``): MSE over the numeric columns plus the mean cross-entropy of the categorical ones.

    NOTE[DIFF]: not in AMF-MedIT (3.1 pretrains with ITC alone). The ITC loss rewards only what the image
    also shows, so a table-only fact (the replica's ``s``, one ATC column) fades from the pooled features
    and no fusion head can use it; reconstructing the uncorrupted row from the corrupted one keeps it, as
    masked tabular reconstruction does beside ITC in TIP (Du et al., ECCV 2024) and feature estimation in
    VIME (Yoon et al., NeurIPS 2020). The decoder is discarded after pretraining.
    """

    def __init__(self, d_tab: int, n_num: int, cardinalities: list[int]):
        super().__init__()
        self.num = nn.Linear(d_tab, n_num) if n_num else None
        self.cat = nn.ModuleList([nn.Linear(d_tab, c) for c in cardinalities])

    def loss(self, h_tab: Tensor, x_num: Tensor, x_cat: Tensor) -> Tensor:
        terms = []
        if self.num is not None:
            terms.append(F.mse_loss(self.num(h_tab), x_num))
        if len(self.cat):
            terms.append(torch.stack([F.cross_entropy(head(h_tab), x_cat[:, j].long())
                                      for j, head in enumerate(self.cat)]).mean())
        return torch.stack(terms).sum()


@torch.no_grad()
def heldout_reconstruction(decoder: TabularDecoder, tab_enc: nn.Module, x_num: np.ndarray, x_cat: np.ndarray,
                           train_idx: np.ndarray, rows: np.ndarray, device, batch_size: int = EVAL_BATCH) -> dict:
    """Held-out reconstruction of clean validation rows: the numeric columns' R^2 (chance: 0, what the
    training mean gives) and the categorical columns' accuracy beside the majority class's."""
    num_pred, cat_pred = [], []
    with _eval_mode(tab_enc, decoder):
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            xc = torch.as_tensor(x_cat[idx]).to(device)
            h = tab_enc(torch.as_tensor(x_num[idx]).to(device), xc if xc.shape[1] else None).pooled
            if decoder.num is not None:
                num_pred.append(decoder.num(h).cpu().numpy())
            cat_pred.append(np.stack([head(h).argmax(1).cpu().numpy() for head in decoder.cat], 1)
                            if len(decoder.cat) else np.zeros((len(idx), 0), dtype=np.int64))
    res: dict = {"split": "validation", "rows": int(len(rows))}
    if num_pred:
        pred, true = np.concatenate(num_pred), x_num[rows]
        base = ((true - x_num[train_idx].mean(0)) ** 2).sum()
        res["numeric_r2"] = float(1 - ((pred - true) ** 2).sum() / max(base, 1e-12))
    if len(decoder.cat):
        pred, true = np.concatenate(cat_pred), x_cat[rows]
        major = np.array([np.bincount(x_cat[train_idx, j].astype(int)).argmax() for j in range(true.shape[1])])
        res["categorical_accuracy"] = float((pred == true).mean())
        res["categorical_majority"] = float((true == major).mean())
    return res


@torch.no_grad()
def heldout_supervised(heads: SupervisedHeads, img_enc: nn.Module, tab_enc: nn.Module, images, x_num: np.ndarray,
                       x_cat: np.ndarray, y: np.ndarray, rows: np.ndarray, device, batch_size: int = EVAL_BATCH) -> dict:
    """Each supervised head's held-out metric (validation rows): AUC for a binary label (chance 0.5), else
    accuracy (chance: the majority class's share)."""
    from bench.metrics import auc

    outs: dict[str, list] = {k: [] for k in heads.heads}
    with _eval_mode(img_enc, tab_enc, heads):
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            xc = torch.as_tensor(x_cat[idx]).to(device)
            h_img = img_enc(image_batch(images[idx], device)).pooled
            h_tab = tab_enc(torch.as_tensor(x_num[idx]).to(device), xc if xc.shape[1] else None).pooled
            for k, o in heads(h_img, h_tab).items():
                outs[k].append(o.cpu().numpy())
    yv = np.asarray(y)[rows]
    res: dict = {"split": "validation", "rows": int(len(rows))}
    for k, parts in outs.items():
        o = np.concatenate(parts)
        if heads.n_out == 1:
            res[k] = float(auc(yv, o[:, 0])) if len(np.unique(yv)) == 2 else None
        else:
            res[k] = float((o.argmax(1) == yv).mean())
    res["metric"] = "auc" if heads.n_out == 1 else "accuracy"
    res["chance"] = 0.5 if heads.n_out == 1 else float(np.bincount(yv.astype(int)).max() / max(1, len(yv)))
    return res


@dataclass
class SharedImage:
    """A pretrained image encoder and its projection head, kept fixed while another tabular encoder is
    aligned to them (``pretrain.image_encoder: shared``); ``key`` is the cache key of the pair it came from."""

    encoder: nn.Module
    head: nn.Module
    key: str


def pretrain_key(data_checksum: str, image: EncoderSpec, tabular: EncoderSpec, cfg: dict, seed: int,
                 image_from: str | None = None) -> str:
    blob = json.dumps(
        {"data": data_checksum, "image": image.key(), "tabular": tabular.key(), "cfg": cfg, "seed": seed, "v": 2,
         "image_from": image_from, "numerics": NUMERICS},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def pretrain_cache_path(data_checksum: str, image: EncoderSpec, tabular: EncoderSpec, cfg: dict, seed: int, *,
                        heldout: bool, image_from: str | None = None) -> Path:
    """Where :func:`pretrain_pair` stores (and finds) this pair's weights; the file name is the cache key."""
    key = pretrain_key(data_checksum, image, tabular, {**cfg, "heldout": heldout}, seed, image_from=image_from)
    return cache_root() / "pretrain" / f"{key}.pt"


def pretrain_pair(
    *,
    images: np.ndarray,
    x_num: np.ndarray,
    x_cat: np.ndarray,
    train_idx: np.ndarray,
    image_spec: EncoderSpec,
    tabular_spec: EncoderSpec,
    cfg: dict,
    seed: int,
    data_checksum: str,
    device: torch.device | str = "cpu",
    progress=None,
    heldout_idx: np.ndarray | None = None,
    image_from: SharedImage | None = None,
    labels: np.ndarray | None = None,
    n_classes: int = 2,
) -> tuple[nn.Module, nn.Module, dict]:
    """Return (image_encoder, tabular_encoder, info) after ITC pretraining, loading from cache if present.

    ``heldout_idx`` (validation rows): ``info["heldout"]`` gives the held-out ITC and top-1 retrieval of the
    randomly initialised and of the pretrained pair beside their chance levels (ln B, 1/B), and whether
    the pair beat chance by the default budget's margin (:func:`learned`). ``cfg["schedule"]`` ``cosine``:
    linear warm-up over the first 10% of steps, then cosine decay (appendix A.2 uses a cosine schedule).

    ``image_from``: the image side is that already pretrained encoder and head, fixed; only the tabular
    encoder and its head learn, against the un-augmented image embeddings, computed once.
    NOTE[DIFF]: AMF-MedIT pretrains every pair jointly; sharing one image encoder between the pairs (the
    ``cpu`` budget) saves the image encoder's forward and backward passes for every pair but the anchor.

    ``cfg["supervised"]`` (``{weight, heads}``) adds :class:`SupervisedHeads`' loss on the training rows'
    ``labels`` (``n_classes`` 2: one logit); ``info["supervised"]`` then holds the heads' held-out metrics.
    """
    path = pretrain_cache_path(data_checksum, image_spec, tabular_spec, cfg, seed, heldout=heldout_idx is not None,
                               image_from=None if image_from is None else image_from.key)
    key = path.stem
    torch.manual_seed(seed)
    img_enc, tab_enc = image_spec.build(), tabular_spec.build()
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        img_enc.load_state_dict(state["image"])
        tab_enc.load_state_dict(state["tabular"])
        return place_image_encoder(img_enc, device), tab_enc.to(device), {**state["info"], "cached": True, "cache_key": key,
                                                        "cache_path": str(path)}

    t0 = time.perf_counter()
    d_proj = int(cfg.get("projection_dim", 128))
    head_img, head_tab = projection_head(img_enc.d_out, d_proj), projection_head(tab_enc.d_out, d_proj)
    if image_from is not None:
        img_enc.load_state_dict(image_from.encoder.state_dict())
        head_img.load_state_dict(image_from.head.state_dict())
        for p in (*img_enc.parameters(), *head_img.parameters()):
            p.requires_grad_(False)
    sup_cfg = cfg.get("supervised") or None
    sup = pos_weight = y_all = None
    if sup_cfg:
        if labels is None:
            raise ValueError("pretrain.supervised needs the labels of the training rows")
        n_out = 1 if n_classes == 2 else n_classes
        sup = SupervisedHeads(img_enc.d_out, tab_enc.d_out, n_out, list(sup_cfg.get("heads", ["image", "tabular"])))
        y_all = torch.as_tensor(np.asarray(labels))
        if n_out == 1:  # class-balanced: the rare positives weigh as much as the negatives in total
            n_pos = float(y_all[torch.as_tensor(train_idx)].sum())
            pos_weight = torch.tensor((len(train_idx) - n_pos) / max(n_pos, 1.0), device=device)
    rec_cfg = cfg.get("reconstruct") or None
    decoder = None
    if rec_cfg:
        decoder = TabularDecoder(tab_enc.d_out, x_num.shape[1],
                                 [int(x_cat[:, j].max()) + 1 for j in range(x_cat.shape[1])])
    extra = [m for m in (sup, decoder) if m is not None]
    modules = nn.ModuleList([img_enc, tab_enc, head_img, head_tab, *extra]).to(device)
    place_image_encoder(img_enc, device)
    opt = torch.optim.Adam([p for p in modules.parameters() if p.requires_grad], lr=float(cfg["lr"]),
                           weight_decay=float(cfg.get("weight_decay", 0)))
    temperature = float(cfg.get("temperature", 0.1))
    bs = int(cfg["batch_size"])
    heldout = None
    if heldout_idx is not None:
        heldout = {"rows": int(len(heldout_idx)), "batch_size": bs, "chance_itc": math.log(bs), "chance_top1": 1.0 / bs,
                   "split": "validation"}
        init = heldout_contrastive(img_enc, tab_enc, head_img, head_tab, images, x_num, x_cat, heldout_idx, bs,
                                   temperature, device)
        heldout.update(itc_init=init["itc"], top1_init=init["top1"])
    total_steps = pretrain_steps(len(train_idx), cfg)
    sched = None
    if cfg.get("schedule", "constant") == "cosine" and total_steps > 1:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(cfg["lr"]), total_steps=total_steps,
                                                    pct_start=0.1, anneal_strategy="cos")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    pool = train_idx
    if cfg.get("max_samples") and len(pool) > int(cfg["max_samples"]):
        pool = np.sort(rng.choice(pool, size=int(cfg["max_samples"]), replace=False))
    pool_num = torch.as_tensor(x_num[pool])
    pool_cat = torch.as_tensor(x_cat[pool])
    epochs = int(cfg["epochs"])
    losses = []
    z_fixed = h_fixed = None
    if image_from is None:
        modules.train()
    else:  # the fixed image side (eval mode): every pool row's features and projection, once, without augmentation
        modules.eval()
        with torch.no_grad():
            h_fixed = torch.cat([img_enc(image_batch(images[pool[i:i + EVAL_BATCH]], device)).pooled
                                 for i in range(0, len(pool), EVAL_BATCH)])
            z_fixed = head_img(h_fixed)
        tab_enc.train()
        head_tab.train()
        for m in extra:
            m.train()
    for epoch in range(epochs):
        order = rng.permutation(len(pool))
        for start in range(0, len(order) - 1, bs):
            sel = order[start : start + bs]
            if len(sel) < 2:
                continue
            idx = pool[sel]
            xn, xc = corrupt_tabular(pool_num[sel], pool_cat[sel], pool_num, pool_cat, gen)
            xn, xc = xn.to(device), xc.to(device)
            if z_fixed is not None:
                rows_t = torch.as_tensor(sel, device=z_fixed.device)
                h_img, z_img = h_fixed[rows_t], z_fixed[rows_t]
            else:
                img = image_batch(augment_images(torch.as_tensor(np.asarray(images[idx])), gen), device)
                h_img = img_enc(img).pooled
                z_img = head_img(h_img)
            h_tab = tab_enc(xn, xc if xc.shape[1] else None).pooled
            z_tab = head_tab(h_tab)
            loss = itc_loss(z_img, z_tab, temperature)
            if sup is not None:
                loss = loss + float(sup_cfg.get("weight", 1.0)) * sup.loss(h_img, h_tab, y_all[idx].to(device), pos_weight)
            if decoder is not None:  # the clean row, from the corrupted one's features
                loss = loss + float(rec_cfg.get("weight", 1.0)) * decoder.loss(h_tab, pool_num[sel].to(device),
                                                                               pool_cat[sel].to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"contrastive pretraining diverged (ITC loss {loss.item()}) at epoch {epoch}; "
                                         "lower pretrain.lr in the budget")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None and sched.last_epoch < total_steps - 1:
                sched.step()
            losses.append(loss.item())
            if progress is not None:
                progress.update(1)
        log.debug("pretrain epoch %d loss %.4f", epoch, np.mean(losses[-10:]) if losses else float("nan"))
    info = {
        "epochs": epochs,
        "samples": int(len(pool)),
        "final_itc_loss": float(np.mean(losses[-5:])) if losses else None,
        "first_itc_loss": float(losses[0]) if losses else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "schedule": cfg.get("schedule", "constant"),
        "steps": len(losses),
        "image_encoder": "joint" if image_from is None else f"shared, fixed (from pair {image_from.key})",
        "image_key": key if image_from is None else image_from.key,  # whose image encoder this pair holds
        "trained_on": process_info(),  # host, process, threads and (on Ray) node
    }
    if heldout is not None:
        after = heldout_contrastive(img_enc, tab_enc, head_img, head_tab, images, x_num, x_cat, heldout_idx, bs,
                                    temperature, device)
        heldout.update(itc=after["itc"], top1=after["top1"], batches=after["batches"])
        heldout["learned"] = learned(heldout)
        info["heldout"] = heldout
        if decoder is not None:
            info["reconstruction"] = {"weight": float(rec_cfg.get("weight", 1.0)),
                                      **heldout_reconstruction(decoder, tab_enc, x_num, x_cat, train_idx, heldout_idx,
                                                               device)}
        if sup is not None:
            info["supervised"] = {"weight": float(sup_cfg.get("weight", 1.0)), "heads": list(sup.heads),
                                  **heldout_supervised(sup, img_enc, tab_enc, images, x_num, x_cat, labels, heldout_idx,
                                                       device)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")  # several suites may share one cache
    cpu_state = {k: {n: t.detach().cpu() for n, t in m.state_dict().items()}
                 for k, m in (("image", img_enc), ("tabular", tab_enc), ("image_head", head_img))}
    torch.save({**cpu_state, "info": info}, tmp)
    os.replace(tmp, path)
    for p in (*img_enc.parameters(), *head_img.parameters()):
        p.requires_grad_(True)
    return img_enc, tab_enc, {**info, "cached": False, "cache_key": key, "cache_path": str(path)}


def shared_image(img_enc: nn.Module, info: dict, cfg: dict) -> SharedImage:
    """The image side of a pretrained pair (from its cache file), to align other tabular encoders to."""
    state = torch.load(info["cache_path"], map_location="cpu", weights_only=True)
    head = projection_head(img_enc.d_out, int(cfg.get("projection_dim", 128)))
    head.load_state_dict(state["image_head"])
    return SharedImage(copy.deepcopy(img_enc).cpu(), head, info["cache_key"])


def pretrain_steps(n_train: int, cfg: dict) -> int:
    n = min(n_train, int(cfg["max_samples"])) if cfg.get("max_samples") else n_train
    # the loop steps over range(0, n - 1, batch_size): ceil((n - 1) / batch_size) batches per epoch
    return int(cfg["epochs"]) * max(1, math.ceil((n - 1) / int(cfg["batch_size"])))
