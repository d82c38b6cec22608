"""User-facing errors: each becomes one line on stderr and exit code 2 in the CLI."""

from __future__ import annotations


class BenchError(Exception):
    """An error caused by the user's input (bad name, bad data, bad option).

    The message is a single line that names the problem and the fix.
    """

    exit_code = 2


class UnknownNameError(BenchError, KeyError):
    def __init__(self, kind: str, name: str, suggestions: list[str]):
        self.kind, self.name, self.suggestions = kind, name, suggestions
        hint = f" Did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        if kind == "kind":  # `bench list fusoin`: the kinds are fixed, list them rather than `bench list kind`
            from bench.registry import KINDS

            msg = f"unknown kind {name!r}.{hint} Choose one of {', '.join(KINDS)} (`python -m bench list` lists them all)."
        else:
            msg = f"unknown {kind} {name!r}.{hint} Run `python -m bench list {kind}` to see what is registered."
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would add quotes
        return self.args[0]


class DataError(BenchError):
    """Missing or malformed dataset files."""


class ConfigError(BenchError):
    """An invalid suite, option or plug-in combination."""


class PluginError(BenchError):
    """A registered third-party plug-in that cannot be imported."""
