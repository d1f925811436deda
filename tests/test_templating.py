"""Go-template placeholders: each construct renders as Go would, and anything
else is a clear error saying what is supported."""

from __future__ import annotations

import pytest

from protocols.errors import JobSpecError, TemplateError
from protocols.templating import SUPPORTED, render


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("{{.name}}", {"name": "x"}, "x"),
        ("{{ .name }}", {"name": "x"}, "x"),
        ("a {{.b}} c {{.d}}", {"b": "B", "d": "D"}, "a B c D"),
        ('{{index . "start-time"}}', {"start-time": "t"}, "t"),
        ('{{index . "missing"}}', {}, ""),
        ('{{or .a "b"}}', {}, "b"),
        ('{{or .a "b"}}', {"a": "A"}, "A"),
        ('{{or .a "b"}}', {"a": ""}, "b"),
        ("{{or .a .b}}", {"b": "B"}, "B"),
        ("{{or .a .b}}", {}, ""),
        ('{{or .a .b "c"}}', {}, "c"),
        ('{{or (index . "start-time") ""}}', {}, ""),
        ('{{or (index . "start-time") "now"}}', {"start-time": "t"}, "t"),
        ('{{or (or .a .b) (index . "c-d")}}', {"c-d": "x"}, "x"),
        ("{{(.a)}}", {"a": "A"}, "A"),
        ('{{"text"}}', {}, "text"),
        ("{{`raw \\n`}}", {}, "raw \\n"),
        ('{{"tab\\tquote\\"\\u00e9\\x41"}}', {}, 'tab\tquote"éA'),
        ('{{or .a "}}"}}', {}, "}}"),
        ("{{or .a 5}}", {}, "5"),
        ("a {{- .b -}} c", {"b": "B"}, "aBc"),
        ("a\n  {{- .b}}\n", {"b": "B"}, "aB\n"),
        ("{{.b -}}\n\n  c", {"b": "B"}, "Bc"),
        ("{{/* a comment */}}x", {}, "x"),
        ("x {{- /* gone */ -}} y", {}, "xy"),
        ("# {{.undefined}} in a comment stays\n", {}, "# {{.undefined}} in a comment stays\n"),
        ("  # indented {{.undefined}}\nb: {{.y}}", {"y": "Y"}, "  # indented {{.undefined}}\nb: Y"),
        ("no placeholders: { } }}", {}, "no placeholders: { } }}"),
        ("{{.a}}", {"a": "{{.b}}"}, "{{.b}}"),  # values are not rendered again
    ],
)
def test_each_construct_renders_as_go_does(template: str, variables: dict[str, str], expected: str) -> None:
    assert render(template, variables) == expected


def test_a_missing_variable_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError) as caught:
        render("Tasks:\n  - {{.query}}\n", {})
    error = caught.value.errors[0]
    assert 'template variable "query" is not set; pass -V query=VALUE' in str(caught.value)
    assert error.path == "line 2"
    assert '{{or .query "default"}}' in error.hint


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.a | upper}}", "pipelines with | are not supported"),
        ('{{printf "%s" .a}}', "'printf' is not supported"),
        ("{{.}}", "whole variable map"),
        ("{{.start-time}}", 'write {{index . "start-time"}}'),
        ("{{.a.b}}", "'.a.b' is not supported"),
        ("{{$x := 1}}", "not supported"),
        ("{{if .a}}x{{end}}", "'if' is not supported"),
        ("{{ (or .a }}", "never closed"),
        ("{{ ( }}", "never closed"),
        ("{{.a", "never closes with }}"),
        ('{{"abc}}', "string literal never closes"),
        ("{{/* open", "never closes with */"),
        ("{{/* c */ .a}}", "a comment must end the placeholder"),
        ("{{}}", "empty"),
        ("{{or}}", "or needs at least one argument"),
        ("{{index .}}", "index takes the variables and one key"),
        ('{{index "a" "b"}}', "index takes the variables and one key"),
        ('{{or index . "a"}}', "needs parentheses"),
        ('{{.a "b"}}', "unexpected"),
        ('{{"\\q"}}', "unknown escape"),
        ('{{"\\UFFFFFFFF"}}', "is not a character"),
    ],
)
def test_unsupported_syntax_says_what_is_supported(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(template, {})
    assert message in str(caught.value)
    assert caught.value.errors[0].hint == SUPPORTED


def test_a_stray_brace_after_a_placeholder_is_text() -> None:
    assert render("{{.a}}}", {"a": "A"}) == "A}"


def test_template_errors_are_job_spec_errors() -> None:
    assert issubclass(TemplateError, JobSpecError)


def test_line_numbers_point_at_the_placeholder() -> None:
    with pytest.raises(TemplateError) as caught:
        render("a\nb\nc {{.a | x}}", {})
    assert caught.value.errors[0].path == "line 3"
