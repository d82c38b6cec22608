"""Reference rows of every leaderboard: the models a clinical statistician would fit, and the ceilings.

A reader must see whether fusion helps, so every leaderboard carries, on the same splits, protocols and
seeds as the fusion methods:

* **classical models on the preprocessed table** — L2 logistic regression (scikit-learn) and gradient-boosted
  trees (LightGBM) — and the same two on the table plus the *frozen image features* of each encoder pair
  (early fusion by a classical model);
* on the synthetic replica, the **ceilings** from the generator's known logit
  (:func:`bench.data.ol3i_synthetic.ceiling_scores`): Bayes-optimal, best additive model, and the table-only
  and image-only information. They are computed on the test split from latents no model sees, so they are
  upper bounds, never ranked.

The image-only and tabular-only *neural* heads are ordinary fusion plug-ins (``image_only``,
``tabular_only``) and go through the same search and seeds as every fusion.

Each row is written as a run directory like a fusion run (report, predictions with validation logits), with
``training.kind`` = ``baseline`` or ``ceiling``, so the leaderboard's statistics treat all rows alike.
Hyper-parameters are chosen on the validation split (never the test split): logistic regression's ``C`` in
:data:`LOGREG_C`; LightGBM's ``num_leaves`` in :data:`LGBM_LEAVES` with early stopping on validation.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass

import numpy as np

from bench.executor import process_info
from bench.metrics import evaluate
from bench.results import RunReport, RunSpec, is_done, run_dir, write_run
from bench.stats import decision_metrics

LOGREG_C = (0.01, 0.1, 1.0, 10.0)
LGBM_LEAVES = (7, 31)
LGBM_ROUNDS = 2000
LGBM_LR = 0.05
LGBM_EARLY_STOP = 50
#: LightGBM's threads: fixed, not the machine's core count, so that a row does not depend on the machine
#: (with ``deterministic=True`` a fixed thread count reproduces the same trees); 2 = the reference machine
LGBM_THREADS = 2
#: multi-class tasks grow one tree per class and round (DVM: 101), so a shorter schedule on 2 cores
LGBM_MULTICLASS = {"leaves": (15,), "rounds": 400, "learning_rate": 0.1, "early_stop": 20}
CEILINGS = {"bayes": "ceiling[bayes]", "additive": "ceiling[additive]", "table_only": "ceiling[table-only]",
            "image_only": "ceiling[image-only]"}
RAW = "raw"  # the tabular "encoder" of a classical model or a ceiling: the preprocessed table itself


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def design_matrix(x_num: np.ndarray, x_cat: np.ndarray, cardinalities: list[int],
                  image_features: np.ndarray | None = None) -> np.ndarray:
    """The preprocessed numeric columns, one-hot categoricals and (optionally) frozen image features."""
    parts = [np.asarray(x_num, dtype=np.float64)]
    for j, card in enumerate(cardinalities):
        parts.append(np.eye(int(card))[np.asarray(x_cat[:, j], dtype=np.int64)])
    if image_features is not None:
        parts.append(np.asarray(image_features, dtype=np.float64))
    return np.concatenate(parts, axis=1)


def _all_classes(scores: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Multi-class scores over every class: a class absent from the training split gets a logit far below
    every other (a classifier cannot predict a class it never saw)."""
    if scores.shape[1] == n_classes:
        return scores
    full = np.full((len(scores), n_classes), float(scores.min()) - 30.0, dtype=np.float32)
    full[:, np.asarray(classes, dtype=np.int64)] = scores
    return full


def _val_metric(task: str, y: np.ndarray, scores: np.ndarray) -> float:
    return float(evaluate(task, y, scores)["value"])


def fit_logreg(x: np.ndarray, y: np.ndarray, split: Split, task: str, seed: int,
               n_classes: int | None = None) -> tuple[np.ndarray, dict]:
    """L2 logistic regression on standardised columns (statistics of the training split); C by validation."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x[split.train].mean(0), x[split.train].std(0)
    z = (x - mu) / np.where(sd > 0, sd, 1.0)
    best = None
    for c in LOGREG_C:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed)
        model.fit(z[split.train], y[split.train])
        scores = _scores(model, z, task)
        if task != "binary":
            scores = _all_classes(scores, model.classes_, int(y.max()) + 1 if n_classes is None else n_classes)
        val = _val_metric(task, y[split.val], scores[split.val])
        if best is None or val > best[0]:
            best = (val, scores, {"model": "logistic regression (L2)", "C": c, "C_grid": list(LOGREG_C)})
    return best[1], {**best[2], "val": best[0]}


def _scores(model, z: np.ndarray, task: str) -> np.ndarray:
    if task == "binary":
        return model.decision_function(z).astype(np.float32)[:, None]
    return model.predict_log_proba(z).astype(np.float32)


def fit_lightgbm(x: np.ndarray, y: np.ndarray, split: Split, task: str, seed: int,
                 n_classes: int | None = None) -> tuple[np.ndarray, dict]:
    """Gradient-boosted trees (LightGBM), early-stopped on validation; ``num_leaves`` by validation."""
    import lightgbm as lgb

    best = None
    multi = task != "binary"
    leaves_grid = LGBM_MULTICLASS["leaves"] if multi else LGBM_LEAVES
    rounds = LGBM_MULTICLASS["rounds"] if multi else LGBM_ROUNDS
    lr = LGBM_MULTICLASS["learning_rate"] if multi else LGBM_LR
    stop = LGBM_MULTICLASS["early_stop"] if multi else LGBM_EARLY_STOP
    for leaves in leaves_grid:
        model = lgb.LGBMClassifier(n_estimators=rounds, learning_rate=lr, num_leaves=leaves,
                                   min_child_samples=20, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                                   random_state=seed, n_jobs=LGBM_THREADS, verbose=-1, deterministic=True, force_row_wise=True)
        with warnings.catch_warnings():  # LightGBM 4.7 renamed eval_set; the old name works on every 4.x
            warnings.simplefilter("ignore")
            # early stopping can only score validation rows of classes the training split has
            seen = np.isin(y[split.val], np.unique(y[split.train]))
            model.fit(x[split.train], y[split.train], eval_set=[(x[split.val][seen], y[split.val][seen])],
                      callbacks=[lgb.early_stopping(stop, verbose=False)])
        raw = model.predict(x, raw_score=True, num_iteration=model.best_iteration_)
        scores = (raw[:, None] if raw.ndim == 1 else raw).astype(np.float32)
        if multi:
            scores = _all_classes(scores, model.classes_, int(y.max()) + 1 if n_classes is None else n_classes)
        val = _val_metric(task, y[split.val], scores[split.val])
        if best is None or val > best[0]:
            best = (val, scores, {"model": "LightGBM", "num_leaves": leaves, "leaves_grid": list(leaves_grid),
                                  "rounds": int(model.best_iteration_ or rounds), "learning_rate": lr})
    return best[1], {**best[2], "val": best[0]}


FITTERS = {"logreg": fit_logreg, "lightgbm": fit_lightgbm}


def reference_fingerprint(base: dict, what: dict) -> dict:
    """A fingerprint for a reference row: the suite's (budget, data, bench) plus the model and library versions."""
    import lightgbm
    import sklearn

    blob = {"base": {k: v for k, v in base.items() if k not in ("digest", "plugins")}, "what": what,
            "sklearn": sklearn.__version__, "lightgbm": lightgbm.__version__,
            "source": hashlib.sha256(open(__file__, "rb").read()).hexdigest()[:16]}
    return {"digest": hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20], **blob}


def reference_rows(pair: str | None, ceilings) -> list[tuple[str, str, dict, object]]:
    """``(row name, kind, what, how)`` of one protocol's reference rows: the classical models on the table
    (``pair`` None; plus the ``ceilings`` given, a mapping of generator logits) or on the table plus the
    pair's image features. ``how`` is a :data:`FITTERS` name or a ceiling's logits."""
    features = "table" if pair is None else "table,image"
    rows = [(f"{m}[{features}]", "baseline", {"model": m, "features": features}, m) for m in FITTERS]
    if ceilings is not None and pair is None:
        rows += [(CEILINGS[k], "ceiling", {"ceiling": k}, ceilings[k]) for k in CEILINGS if k in ceilings]
    return rows


def reference_spec(suite, protocol: str, image_label: str, pair: str | None, row: str, what: dict, seed: int,
                   base_fingerprint: dict) -> tuple[RunSpec, dict]:
    """One reference row's run spec and the fingerprint it is written (and found) with."""
    sp = RunSpec(suite.name, protocol, image_label, RAW if pair is None else pair, row, "frozen", int(seed))
    return sp, reference_fingerprint(base_fingerprint, {**what, "protocol": protocol, "pair": pair, "seed": seed})


def inputs_digest(x: np.ndarray, y: np.ndarray, split: Split, task: str, n_classes: int) -> str:
    """What a classical fit depends on besides its model and seed: design matrix, labels, split, task."""
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes())
    for part in (split.train, split.val, split.test):
        h.update(np.ascontiguousarray(part).tobytes())
    return f"{h.hexdigest()}:{task}:{int(n_classes)}"


def reference_inputs(data, prep, x_num, x_cat, image_features: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, Split]:
    """The design matrix, labels and split every classical model of one reference group is fitted on."""
    return (design_matrix(x_num, x_cat, list(data.cat_cardinalities), image_features), np.asarray(data.y),
            Split(prep.train, prep.val, prep.test))


def fits_needed(*, out, suite, protocol: str, image_label: str, pair: str | None, seeds: list[int],
                base_fingerprint: dict, force: bool, image_features) -> list[tuple[str, int]]:
    """``(model, seed)`` of the classical fits one reference group still has to make (rows not written)."""
    todo = []
    for fusion, _kind, what, how in reference_rows(None if image_features is None else pair, None):
        for seed in seeds:
            sp, fp = reference_spec(suite, protocol, image_label, pair, fusion, what, seed, base_fingerprint)
            if force or not is_done(run_dir(out, sp), fp):
                todo.append((how, int(seed)))
    return todo


def write_reference_runs(*, out, suite, protocol: str, image_label: str, data, prep, x_num, x_cat,
                         image_features: np.ndarray | None, pair: str | None, seeds: list[int], prov: dict,
                         env: dict, base_fingerprint: dict, ceilings: dict[str, np.ndarray] | None,
                         force: bool, say, pretraining: dict | None = None, memo: dict | None = None) -> list[str]:
    """Fit and write the reference rows of one protocol; returns their run ids (finished ones are kept).

    ``image_features`` and ``pair`` given: the classical models on table + that pair's frozen image features;
    else the classical models on the table alone, plus ``ceilings`` (logits for all samples) when given.
    ``pretraining``: the pair's pretraining record, kept with rows on its image features.
    ``memo``: ``(scores, info, where it was fitted)`` by ``(inputs_digest, model, seed)``, shared by the
    calls of one suite run, so pairs that share one image encoder (identical image features) fit each
    model once. A value may also be a promise, a function returning that triple: a fit made elsewhere
    (on a Ray cluster, :func:`bench.executor.reference_fits_on_ray`), awaited when its row is written.
    """
    x, y, split = reference_inputs(data, prep, x_num, x_cat, image_features)
    tab_label = RAW if pair is None else pair
    rows = reference_rows(None if image_features is None else pair, ceilings)
    ids = []
    digest = None  # of (design matrix, labels, split, task): computed when a model is first fitted
    ids_path = np.asarray(data.ids if data.ids is not None else np.arange(data.n))
    for fusion, kind, what, how in rows:
        test = None
        for seed in seeds:
            sp, fp = reference_spec(suite, protocol, image_label, pair, fusion, what, seed, base_fingerprint)
            ids.append(sp.run_id)
            if not force and is_done(run_dir(out, sp), fp):
                continue
            if isinstance(how, str):
                if digest is None:
                    digest = inputs_digest(x, y, split, data.task, data.n_classes)
                key = (digest, how, int(seed))
                if memo is not None and key in memo:  # the same fit on the same inputs: not repeated
                    if callable(memo[key]):  # made elsewhere: wait for it here
                        memo[key] = memo[key]()
                    scores, info, where = memo[key]
                else:
                    scores, info = FITTERS[how](x, y, split, data.task, int(seed), n_classes=int(data.n_classes))
                    where = process_info()
                    if memo is not None:
                        memo[key] = (scores, info, where)
            else:  # a ceiling: the generator's logit for every sample, nothing fitted
                scores, info = np.asarray(how, dtype=np.float32)[:, None], {"model": f"generator {what['ceiling']} logit"}
                where = {}
            test = {**evaluate(data.task, y[split.test], scores[split.test]),
                    **decision_metrics(data.task, y[split.val], scores[split.val], y[split.test], scores[split.test])}
            val = evaluate(data.task, y[split.val], scores[split.val])
            report = RunReport(
                spec=sp, suite_version=suite.version, budget=suite.budget_name, metric=test["metric"], test=test,
                val=val, hyperparameters={k: v for k, v in info.items() if k not in ("model", "val")}, profile={},
                provenance=prov, environment={**env, **where}, fingerprint=fp,
                training={"kind": kind, "model": info["model"], "features": what.get("features", "latents"),
                          "image_features_from": pair, "selection": "validation split",
                          **({"pretraining": pretraining} if pair is not None and pretraining else {})})
            arrays = {"test_ids": ids_path[split.test].astype(str), "test_y": y[split.test],
                      "test_logits": scores[split.test], "val_y": y[split.val], "val_logits": scores[split.val]}
            write_run(run_dir(out, sp), report, {"spec": sp.__dict__, "reference": what}, arrays, fingerprint=fp)
        if test is not None:
            say(f"[bench] reference {fusion} · {tab_label} / {protocol}: test {test['metric']} {test['value']:.4f}")
    return ids
