"""User-facing errors.

Every error the tool raises on purpose derives from `SimulGenError`; the entry
script prints its message and exits non-zero without a traceback. Messages name
the file, the line or key, what was expected and how to fix it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


class SimulGenError(Exception):
    """An error caused by the user's input or environment, with a readable message."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in the configuration."""

    message: str
    fix: str = ""
    file: Optional[str] = None
    line: Optional[int] = None
    key: Optional[str] = None

    def render(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file) + (f":{self.line}" if self.line else ""))
        if self.key:
            where.append(f"key '{self.key}'")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class ConfigError(SimulGenError):
    """All configuration problems found, reported together."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        count = len(self.issues)
        header = f"{count} configuration problem{'s' if count != 1 else ''} found:"
        super().__init__("\n".join([header] + [f"  - {issue.render()}" for issue in self.issues]))


class DataError(SimulGenError):
    """The dataset or a conditioner input file cannot be used as it is."""


class CheckpointError(SimulGenError):
    """A saved model or checkpoint cannot be loaded or does not match the run."""


class TrainingDivergedError(SimulGenError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class TrainingInterrupted(SimulGenError):
    """Ctrl-C or SIGTERM: a resumable checkpoint was written."""
