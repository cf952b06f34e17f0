"""Errors raised on bad input. Each names the file (and line, where there is one) and the problem."""

from __future__ import annotations

from pathlib import Path


class MVSInputError(ValueError):
    """Input data that cannot be used: a malformed file, a missing view, an absurd value."""

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}, line {line}"
            where += ": "
        super().__init__(f"{where}{problem}")
