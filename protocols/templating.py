"""Go-template placeholders in job files, rendered on the raw text before parsing.

The subset job files use, read by a small scanner, parser and evaluator:
`{{.name}}`, `{{index . "key"}}`, `{{or A B ...}}`, string literals ("..."
with Go escapes, and `raw`), numbers, parenthesised nesting
(`{{or (index . "start-time") ""}}`), comments `{{/* ... */}}` and the trim
markers `{{- ` and ` -}}`.

A bare `.name` with no value is an error naming the variable; inside `or` or
`index` a missing value is simply empty (`index` of a missing key is empty,
`or` picks the first non-empty argument, else its last). Placeholders on YAML
comment lines (the whole line a comment) are left alone: comments may talk
about templates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from protocols.errors import TemplateError

SUPPORTED = (
    'supported: {{.name}}, {{index . "key"}}, {{or A B}}, "text" and `text` literals, numbers, '
    "( ) nesting, {{/* comments */}} and {{- -}} trimming"
)
_TOKEN = re.compile(
    r'(?P<open>\()|(?P<close>\))|(?P<pipe>\|)|(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)'
    r"|(?P<word>[^\s()\"`|}]+)|(?P<brace>\})"
)
_FIELD = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[-+]?[0-9]+(?:\.[0-9]+)?")


def render(text: str, variables: Mapping[str, str]) -> str:
    """`text` with every placeholder filled from `variables`; raises `TemplateError`."""
    out: list[str] = []
    position = 0
    while (start := text.find("{{", position)) >= 0:
        line_start = text.rfind("\n", 0, start) + 1
        if text[line_start:start].lstrip().startswith("#"):
            line_end = text.find("\n", start)
            line_end = len(text) if line_end < 0 else line_end
            out.append(text[position:line_end])  # a YAML comment may mention {{...}}: keep it as written
            position = line_end
            continue
        action = _scan(text, start)
        before = text[position:start]
        out.append(before.rstrip() if action.trim_left else before)
        if action.tokens:
            out.append(_Evaluator(action, variables).render())
        position = action.end
        if action.trim_right:
            position = _skip_space(text, position)
    out.append(text[position:])
    return "".join(out)


@dataclass(frozen=True)
class _Action:
    """One `{{ ... }}` as scanned: its tokens (none for a comment) and where it ends."""

    source: str
    line: int
    tokens: tuple[tuple[str, str], ...]
    end: int
    trim_left: bool
    trim_right: bool


def _scan(text: str, start: int) -> _Action:
    line = text.count("\n", 0, start) + 1
    position = start + 2
    trim_left = text.startswith("-", position) and position + 1 < len(text) and text[position + 1].isspace()
    position += 1 if trim_left else 0
    body = position

    def fail(what: str) -> TemplateError:
        snippet = text[start : start + 60].split("\n")[0]
        return TemplateError(f"template {snippet!r}: {what}", path=f"line {line}", hint=SUPPORTED)

    def closing(at: int) -> tuple[int, bool] | None:
        """Where the action ends and whether it trims, if it closes at `at`."""
        if text.startswith("}}", at):
            return at + 2, False
        if text.startswith("-}}", at) and text[at - 1].isspace():
            return at + 3, True
        return None

    tokens: list[tuple[str, str]] = []
    while True:
        position = _skip_space(text, position)
        if position >= len(text):
            raise fail("the placeholder opens with {{ but never closes with }}")
        if not tokens and text.startswith("/*", position) and position == _skip_space(text, body):
            close = text.find("*/", position + 2)
            if close < 0:
                raise fail("the comment /* never closes with */")
            ended = closing(_skip_space(text, close + 2))
            if ended is None:
                raise fail("a comment must end the placeholder: {{/* ... */}}")
            return _Action(text[start : ended[0]], line, (), ended[0], trim_left, ended[1])
        ended = closing(position)
        if ended is not None:
            if not tokens:
                raise fail("the placeholder is empty")
            return _Action(text[start : ended[0]], line, tuple(tokens), ended[0], trim_left, ended[1])
        match = _TOKEN.match(text, position)
        if match is None:
            raise fail("a string literal never closes" if text[position] in "\"`" else f"cannot read {text[position]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


class _Evaluator:
    """Parses one action's tokens (recursive descent) and evaluates the result."""

    def __init__(self, action: _Action, variables: Mapping[str, str]) -> None:
        self.action = action
        self.variables = variables
        self.index = 0

    def render(self) -> str:
        tokens = self.action.tokens
        node = self._command()
        if self.index < len(tokens):
            kind, text = tokens[self.index]
            raise self._error("pipelines with | are not supported" if kind == "pipe" else f"unexpected {text!r}")
        value = self._evaluate(node, lenient=False)
        if not isinstance(value, str):
            raise self._error("{{.}} is the whole variable map, not a value; name one: {{.name}}")
        return value

    # -------------------------------------------------------- parsing

    def _command(self) -> tuple:
        """`or A B ...`, `index X K`, or a single operand."""
        kind, text = self._peek()
        if kind == "word" and text in ("or", "index"):
            self.index += 1
            arguments = []
            while self.index < len(self.action.tokens) and self._peek()[0] not in ("close", "pipe"):
                arguments.append(self._operand())
            return ("call", text, tuple(arguments))
        return self._operand()

    def _operand(self) -> tuple:
        kind, text = self._peek()
        self.index += 1
        if kind == "open":
            if self.index >= len(self.action.tokens):
                raise self._error("a ( is never closed")
            node = self._command()
            if self.index >= len(self.action.tokens) or self._peek()[0] != "close":
                raise self._error("a ( is never closed")
            self.index += 1
            return node
        if kind == "string":
            return ("literal", _unquote(text, self._error))
        if kind == "raw":
            return ("literal", text[1:-1])
        if kind == "word" and text == ".":
            return ("dot",)
        if kind == "word" and _FIELD.fullmatch(text):
            return ("field", text[1:])
        if kind == "word" and _NUMBER.fullmatch(text):
            return ("literal", text)
        if kind == "word" and text in ("or", "index"):
            raise self._error(f"{text} as an argument needs parentheses: ({text} ...)")
        if kind == "word" and text.startswith(".") and "." not in text[1:]:
            raise self._error(f'{text!r} is not a plain name; write {{{{index . "{text[1:]}"}}}}')
        if kind == "pipe":
            raise self._error("pipelines with | are not supported")
        raise self._error(f"{text!r} is not supported")

    def _peek(self) -> tuple[str, str]:
        return self.action.tokens[self.index]

    # -------------------------------------------------------- evaluation

    def _evaluate(self, node: tuple, lenient: bool) -> str | Mapping[str, str]:
        kind = node[0]
        if kind == "literal":
            return node[1]
        if kind == "dot":
            return self.variables
        if kind == "field":
            name = node[1]
            if name in self.variables:
                return self.variables[name]
            if lenient:
                return ""
            raise TemplateError(
                f'template variable "{name}" is not set; pass -V {name}=VALUE',
                path=f"line {self.action.line}",
                hint=f'or write {{{{or .{name} "default"}}}} to make it optional',
            )
        name, arguments = node[1], [self._evaluate(argument, lenient=True) for argument in node[2]]
        if name == "or":
            if not arguments:
                raise self._error("or needs at least one argument")
            return next((argument for argument in arguments if argument), arguments[-1])
        if len(arguments) != 2 or not isinstance(arguments[0], Mapping) or not isinstance(arguments[1], str):
            raise self._error('index takes the variables and one key: {{index . "key"}}')
        return arguments[0].get(arguments[1], "")

    def _error(self, what: str) -> TemplateError:
        return TemplateError(f"template {self.action.source!r}: {what}", path=f"line {self.action.line}", hint=SUPPORTED)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.DOTALL)


def _unquote(literal: str, error: Callable[[str], TemplateError]) -> str:
    """A Go double-quoted string literal's text."""

    def escape(match: re.Match[str]) -> str:
        code = match.group(1) or match.group(2) or match.group(3)
        if code is not None:
            try:
                return chr(int(code, 16))
            except (ValueError, OverflowError):
                raise error(f"{match.group(0)} is not a character") from None
        if match.group(4) not in _ESCAPES:
            raise error(f"unknown escape \\{match.group(4)} in a string literal")
        return _ESCAPES[match.group(4)]

    return _ESCAPE.sub(escape, literal[1:-1])
