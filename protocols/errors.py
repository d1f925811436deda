"""Errors in what a user wrote: every one says where, what, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    path: str  # e.g. Tasks[0].Resources.Memory
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" ({self.hint})" if self.hint else "")


class JobSpecError(ValueError):
    """A job document is wrong; `errors` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(error) for error in errors))


class TemplateError(JobSpecError):
    """A template placeholder cannot be filled."""

    def __init__(self, message: str, path: str = "template", hint: str = "") -> None:
        super().__init__([FieldError(path, message, hint)])
