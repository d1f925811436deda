"""Go-template placeholders in job files, rendered on the raw text.

The subset job files use: `{{.name}}`, `{{index . "key"}}`, `{{or A B ...}}`,
string literals ("..." and `...`), parenthesised nesting
(`{{or (index . "start-time") ""}}`), comments `{{/* ... */}}` and the trim
markers `{{-` and `-}}`. A bare `.name` with no value is an error naming the
variable; inside `or` or `index` a missing value is simply empty, as in Go.
Placeholders on YAML comment lines are left alone: comments may talk about
templates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from protocols.errors import TemplateError

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*(?:(?P<open>\()|(?P<close>\))|(?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<word>[^\s()"`]+))')
_SUPPORTED = 'use {{.name}}, {{index . "key"}}, {{or A B}} and "string literals"'


@dataclass(frozen=True)
class _Missing:
    name: str


def render(text: str, variables: Mapping[str, str]) -> str:
    """Fill every placeholder of `text` from `variables`."""
    out: list[str] = []
    position = 0
    for match in _ACTION.finditer(text):
        before = text[position : match.start()]
        if match.group(1):
            before = before.rstrip()
        out.append(before)
        position = match.end()
        if match.group(3):
            rest = text[position:]
            position += len(rest) - len(rest.lstrip())
        body = match.group(2).strip()
        if body.startswith("/*") and body.endswith("*/"):
            continue
        line_start = text.rfind("\n", 0, match.start()) + 1
        if text[line_start : match.start()].lstrip().startswith("#"):
            out.append(match.group(0))  # a YAML comment may mention {{...}}
            continue
        value = _Evaluator(body, variables).value()
        if isinstance(value, _Missing):
            raise TemplateError(
                f'template variable "{value.name}" is not set; pass -V {value.name}=VALUE '
                f'(or write {{{{or .{value.name} "default"}}}})',
                path=f"{{{{{body}}}}}",
            )
        if not isinstance(value, str):
            raise TemplateError(f"{{{{{body}}}}} is the whole variable map, not a value; {_SUPPORTED}", path="template")
        out.append(value)
    out.append(text[position:])
    if "{{" in text[position:]:
        raise TemplateError("a placeholder opens with {{ but never closes with }}", path="template")
    return "".join(out)


class _Evaluator:
    """A tiny recursive-descent reader of one action's pipeline."""

    def __init__(self, body: str, variables: Mapping[str, str]) -> None:
        self.body = body
        self.variables = variables
        self.tokens = self._tokenize(body)
        self.index = 0

    def value(self) -> str | _Missing:
        if not self.tokens:
            raise self._error("an empty placeholder {{ }}")
        result = self._command(lenient=False)
        if self.index != len(self.tokens):
            raise self._error(f"unexpected {self.tokens[self.index][1]!r}")
        return result

    def _command(self, lenient: bool) -> str | _Missing:
        kind, text = self.tokens[self.index]
        if kind == "word" and text in ("or", "index"):
            self.index += 1
            arguments = []
            while self.index < len(self.tokens) and self.tokens[self.index][0] != "close":
                arguments.append(self._operand(lenient=True))
            return self._or(arguments) if text == "or" else self._index(arguments)
        return self._operand(lenient)

    def _operand(self, lenient: bool) -> str | _Missing | Mapping[str, str]:  # type: ignore[return]
        kind, text = self.tokens[self.index]
        self.index += 1
        if kind == "open":
            value = self._command(lenient)
            if self.index >= len(self.tokens) or self.tokens[self.index][0] != "close":
                raise self._error("a ( is never closed")
            self.index += 1
            return value
        if kind == "string":
            return _unquote(text)
        if kind == "word" and text == ".":
            return self.variables  # type: ignore[return-value]
        if kind == "word" and text.startswith(".") and len(text) > 1 and "." not in text[1:]:
            name = text[1:]
            if name in self.variables:
                return self.variables[name]
            return "" if lenient else _Missing(name)
        if kind == "word" and _is_number(text):
            return text
        raise self._error(f"{text!r} is not supported")

    def _or(self, arguments: list[object]) -> str:
        if not arguments:
            raise self._error("or needs at least one argument")
        for argument in arguments:
            if isinstance(argument, str) and argument:
                return argument
        last = arguments[-1]
        return last if isinstance(last, str) else ""

    def _index(self, arguments: list[object]) -> str:
        if len(arguments) != 2 or not isinstance(arguments[1], str) or not isinstance(arguments[0], Mapping):
            raise self._error('index takes the variables and a key: {{index . "key"}}')
        return arguments[0].get(arguments[1], "")

    def _tokenize(self, body: str) -> list[tuple[str, str]]:
        tokens = []
        position = 0
        while position < len(body):
            match = _TOKEN.match(body, position)
            if match is None or match.end() == position:
                if body[position:].strip() == "":
                    break
                raise self._error(f"cannot read {body[position:]!r}")
            kind = match.lastgroup or ""
            if "|" == match.group(kind):
                raise self._error("pipelines (|) are not supported")
            tokens.append((kind, match.group(kind)))
            position = match.end()
        return tokens

    def _error(self, what: str) -> TemplateError:
        return TemplateError(f"{what} in {{{{{self.body}}}}}; {_SUPPORTED}", path="template")


def _unquote(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    return bytes(literal[1:-1], "utf-8").decode("unicode_escape")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
