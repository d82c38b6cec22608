"""The commit a run records: -dirty for changed code, not for the leaderboards a run publishes."""

from __future__ import annotations

import subprocess

from bench.results import git_commit


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(root)})


def test_git_commit_is_dirty_for_code_changes_only(tmp_path):
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "x.md").write_text("a\n")
    (tmp_path / "code.py").write_text("a = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "init")
    clean = git_commit(tmp_path)
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (tmp_path / "leaderboards" / "x.md").write_text("b\n")  # a published leaderboard: generated output
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("a = 2\n")
    assert git_commit(tmp_path) == clean + "-dirty"


def test_git_commit_outside_git_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"
