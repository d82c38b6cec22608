"""Built-in suites: versioned YAML files in this folder."""

from __future__ import annotations

from pathlib import Path

SUITES_DIR = Path(__file__).parent


def register_builtin_suites() -> None:
    import yaml

    from bench.registry import register_suite

    for path in sorted(SUITES_DIR.glob("*.yaml")):
        if not path.name.startswith("_"):
            doc = yaml.safe_load(path.read_text()) or {}
            summary = f"v{doc.get('version', 1)}: {doc.get('description', '')}"
            register_suite(path.stem, str(path), summary=summary)
