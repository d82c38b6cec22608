"""execute_plan (bench/executor.py) on hand-made plans: which tasks run, what each reads, when outputs are
dropped, batches, and the order check that stops a planner bug before anything runs; and the planner's
order for a suite that lists trainable before frozen."""

from __future__ import annotations

import pytest

from bench.executor import execute_plan, tasks_to_run
from bench.plan import Task, plan_suite
from bench.suite import load_suite


def _t(kind, name, done=False, deps=(), after=(), batch=None):
    return Task(kind, name, done, 1.0, "units", key=(kind, name), deps=tuple(deps), after=tuple(after), batch=batch)


def test_pending_tasks_run_with_their_inputs_and_finished_ones_only_when_read():
    tasks = [
        _t("pretrain", "a", done=True),  # stored, read by a pending task: loaded
        _t("pretrain", "b", done=True),  # stored, read by nobody that runs: skipped
        _t("encode", "a", deps=[("pretrain", "a")]),
        _t("encode", "b", done=True, deps=[("pretrain", "b")]),
        _t("fit", "a1", deps=[("encode", "a")], batch="a"),
        _t("fit", "a2", deps=[("encode", "a")], batch="a"),
        _t("render", "r", after=[("fit", "a1"), ("fit", "a2")]),
    ]
    assert tasks_to_run(tasks) == [True, False, True, False, True, True, True]
    calls, seen_store = [], []

    def handler(task, inputs):
        calls.append((task.kind, task.name, sorted(inputs)))
        return f"out {task.name}"

    def fits(batch, inputs):
        calls.append(("fit", [t.name for t in batch], sorted(inputs)))
        seen_store.append(dict(inputs))
        return [f"fit {t.name}" for t in batch]

    skipped = []
    left = execute_plan(tasks, {"pretrain": handler, "encode": handler, "fit": fits, "render": handler},
                        on_skip=lambda t: skipped.append(t.name))
    assert calls == [("pretrain", "a", []), ("encode", "a", [("pretrain", "a")]),
                     ("fit", ["a1", "a2"], [("encode", "a")]), ("render", "r", [])]
    assert seen_store == [{("encode", "a"): "out a"}]
    assert skipped == ["b", "b"]  # pretrain b and encode b
    # every output read by a later task was dropped after its last reader; the unread ones are returned
    assert left == {("fit", "a1"): "fit a1", ("fit", "a2"): "fit a2", ("render", "r"): "out r"}


def test_a_task_planned_before_what_it_must_follow_stops_the_plan_before_anything_runs():
    ran = []
    handlers = {k: (lambda task, inputs: ran.append(task.name)) for k in ("fit", "pretrain")}
    late_after = [_t("fit", "trainable", after=[("fit", "frozen")]), _t("fit", "frozen")]
    with pytest.raises(RuntimeError, match="plan order: fit 'trainable' needs .* planned later"):
        execute_plan(late_after, handlers)
    late_dep = [_t("fit", "x", deps=[("pretrain", "p")]), _t("pretrain", "p")]
    with pytest.raises(RuntimeError, match="planned later"):
        execute_plan(late_dep, handlers)
    same_batch = [_t("fit", "s1", batch="m"), _t("fit", "s2", after=[("fit", "s1")], batch="m")]
    with pytest.raises(RuntimeError, match="in the same batch"):
        execute_plan(same_batch, {"fit": lambda batch, inputs: None})
    assert ran == []
    # a finished task that must come first is no constraint
    execute_plan([_t("fit", "trainable", after=[("fit", "frozen")]), _t("fit", "frozen", done=True)], handlers)
    assert ran == ["trainable"]


def test_a_suite_listing_trainable_first_plans_the_frozen_fits_its_warm_start_loads_first(tmp_path):
    suite = load_suite("ol3i-incomplete", budget="smoke", tabular_encoders=["mlp"], fusions=["concat"])
    suite.strategies = ["trainable", "frozen"]  # as a suite file may list them
    assert suite.budget["finetune"]["trainable"].get("warm_start") == "frozen"
    tasks = plan_suite(suite, out=tmp_path)
    fits = [t for t in tasks if t.kind == "fit"]
    order = {t.key: i for i, t in enumerate(tasks)}
    warm = [t for t in fits if t.after]
    assert warm and all(order[a] < order[t.key] for t in warm for a in t.after)
    assert tasks_to_run(tasks) == [True] * len(tasks)
