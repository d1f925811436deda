"""Errors in what a user wrote: every one says where, what, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem: `path` like `Tasks[0].Resources.Memory`, what is wrong, how to fix it."""

    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" ({self.hint})" if self.hint else "")


class JobSpecError(ValueError):
    """A job document is wrong; `errors` lists every problem found, and
    `str()` shows them one per line."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


class TemplateError(JobSpecError):
    """A template placeholder cannot be filled (a `JobSpecError`, so callers catch one type)."""

    def __init__(self, message: str, path: str = "template", hint: str = "") -> None:
        super().__init__([FieldError(path, message, hint)])
