"""The main command on files in the real OL3I release format (written small by the test)."""

from __future__ import annotations

import pandas as pd
import pytest
from test_data import ol3i_root  # noqa: F401  (fixture: a tiny OL3I release in the real layout)

from bench.cli import main


def test_run_on_real_format_files(ol3i_root, tmp_path, capsys):  # noqa: F811
    rc = main(["run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--data-root", str(ol3i_root),
               "--tabular", "mlp", "--fusion", "concat", "amf", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(tmp_path / "ol3i-incomplete" / "results.csv")
    assert (df.data_source == "real").all() and (df.dataset == "ol3i").all()
    assert len(df) == 2 * 2 * 2 * 2  # fusions x strategies x protocols x seeds
    md = (tmp_path / "ol3i-incomplete" / "leaderboard.md").read_text()
    assert "**REAL**" in md


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda root: pd.read_csv(root / "clinical_data.csv").drop(columns=["label_1y"]).to_csv(
            root / "clinical_data.csv", index=False), "label_1y"),
        (lambda root: (root / "l3_slices.h5").unlink(), "l3_slices.h5"),
    ],
)
def test_bad_real_data_is_one_line_exit_2(ol3i_root, tmp_path, capsys, mutate, needle):  # noqa: F811
    mutate(ol3i_root)
    for extra in ol3i_root.glob("ehr_*.csv"):
        extra.unlink()
    rc = main(["run", "--suite", "ol3i-incomplete", "--budget", "smoke", "--data-root", str(ol3i_root),
               "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
