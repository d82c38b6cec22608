"""Run lifecycle hooks (bench.hooks) and their first user, the MLflow logger (bench run --mlflow)."""

from __future__ import annotations

import sys

import pytest

from bench.cli import main
from bench.hooks import HookList, RunHooks
from bench.pipeline import run_suite
from bench.results import RunSpec
from bench.suite import load_suite

SPEC = RunSpec("s", "complete", "resnet10t", "mlp", "concat", "frozen", 1)


class Recorder(RunHooks):
    def __init__(self):
        self.events: list[tuple] = []

    def run_start(self, spec, params):
        self.events.append(("start", spec.run_id, dict(params)))

    def epoch_end(self, spec, epoch, metrics):
        self.events.append(("epoch", spec.run_id, epoch, dict(metrics)))

    def run_end(self, spec, report, run_dir):
        self.events.append(("end", spec.run_id, report.test["value"], run_dir))

    def run_failed(self, spec, reason, run_dir):
        self.events.append(("failed", spec.run_id, reason))


class Broken(RunHooks):
    def epoch_end(self, spec, epoch, metrics):
        raise ConnectionError("tracking server unreachable")


def test_a_hook_that_raises_is_switched_off_and_the_others_go_on():
    rec = Recorder()
    hooks = HookList([Broken(), rec])
    with pytest.warns(UserWarning, match="Broken failed in epoch_end .*ConnectionError.*switched off"):
        hooks.epoch_end(SPEC, 0, {"val_auc": 0.6})
    hooks.epoch_end(SPEC, 1, {"val_auc": 0.7})  # no second warning: Broken is gone
    assert [e[2] for e in rec.events] == [0, 1]
    assert len(hooks.hooks) == 1


@pytest.mark.slow
def test_a_suite_reports_every_run_to_its_hooks_and_to_mlflow(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from bench.mlflow_hooks import MLflowHooks, default_tracking_uri

    suite = load_suite("ol3i-incomplete", budget="smoke", fusions=["concat", "late_fusion"],
                       tabular_encoders=["mlp"], strategies=["frozen"])
    rec = Recorder()
    result = run_suite(suite, out=tmp_path, progress=False, hooks=[rec, MLflowHooks.for_suite(suite.name, tmp_path)])
    networks = [r for r in result.reports if r.training.get("kind") != "reference"]
    ids = sorted(r.spec.run_id for r in networks)
    assert ids and sorted(e[1] for e in rec.events if e[0] == "end") == ids
    assert sorted(e[1] for e in rec.events if e[0] == "start") == ids
    for r in networks:  # one epoch event per epoch run, each with the validation metric
        epochs = [e for e in rec.events if e[0] == "epoch" and e[1] == r.spec.run_id]
        assert len(epochs) == r.training["epochs_run"] and all("val_auc" in e[3] for e in epochs)

    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri(tmp_path))
    exp = client.get_experiment_by_name(suite.name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert sorted(r.info.run_name for r in runs) == ids
    by_name = {r.info.run_name: r for r in runs}
    for report in networks:
        run = by_name[report.spec.run_id]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test_value"] == pytest.approx(report.test["value"])
        assert run.data.params["lr"] == str(report.hyperparameters["lr"])
        assert run.data.tags["bench.fusion"] == report.spec.fusion
        assert run.data.tags["bench.git_commit"] == str(report.environment.get("git_commit"))
        history = client.get_metric_history(run.info.run_id, "val_auc")
        assert [m.step for m in history] == list(range(report.training["epochs_run"]))
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.json", "predictions.npz"}


def test_mlflow_missing_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    rc = main(["run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--out", str(tmp_path), "--mlflow"])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install -e '.[mlflow]'" in err and "Traceback" not in err
