"""`p2pnode job validate`: prints the normalised job or every problem, reads
stdin, and fills templates from -V and -E (explicit -V wins)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from p2pnode.cli import main
from protocols.jobspec import job_spec_from_data, parse_job

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "spec" / "examples"
OPS = str(EXAMPLES / "ops.yaml")
DAEMON_VARS = ["-V", "query=q", "-V", "OpenSearchEndpoint=https://o", "-V", "AccessLogBucket=b", "-V", "AWSRegion=r"]


def validate(*arguments: str, input: str | bytes | None = None, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["job", "validate", *arguments], input=input, env=env)


def parameters(result) -> list[str]:  # type: ignore[no-untyped-def]
    return json.loads(result.stdout)["Tasks"][0]["Engine"]["Params"]["Parameters"]


@pytest.mark.parametrize(("name", "extra"), [("batch", []), ("service", []), ("ops", ["-V", "query=q"]), ("daemon", DAEMON_VARS)])
def test_the_examples_validate_and_print_the_normalised_job(name: str, extra: list[str]) -> None:
    path = EXAMPLES / f"{name}.yaml"
    result = validate(str(path), *extra)
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    variables = dict(item.split("=", 1) for item in extra[1::2])
    assert job_spec_from_data(printed).spec == parse_job(path.read_text(), variables=variables).spec
    assert printed["Tasks"][0]["Resources"]["CPU"] == "250m"


def test_json_output_and_warnings_on_stderr() -> None:
    result = validate(str(EXAMPLES / "service.yaml"), "--output", "json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["Count"] == 1 and document["Tasks"][0]["Resources"]["Memory"] == 4 << 30
    assert "warning: Tasks[0].ResultPaths: service jobs run continuously" in result.stderr
    assert "warning" not in result.stdout


def test_stdin_is_read_with_a_dash() -> None:
    text = (EXAMPLES / "batch.yaml").read_text()
    result = validate("-", "-o", "json", input=text)
    assert result.exit_code == 0 and json.loads(result.stdout)["Name"] == "Batch Job Example"


def test_every_error_is_printed_one_per_line_with_exit_1() -> None:
    result = validate("-", input="Type: batch\nConstraint: []\nCount: 0\nTasks: []\n")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert "Constraint: unknown key 'Constraint' (did you mean Constraints?)" in lines
    assert any(line.startswith("Count: must be at least 1") for line in lines)
    assert "Tasks: exactly one task per job is supported; found 0 (keep one task, or submit one job per task)" in lines
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("arguments", "input", "code", "message"),
    [
        (["/no/such/job.yaml"], None, 2, "no such file: /no/such/job.yaml"),
        ([str(EXAMPLES)], None, 2, "is a directory"),
        (["-"], b"\xff\xfeType: batch", 1, "not UTF-8 text"),
        (["-"], "Type: [", 1, "not valid YAML or JSON"),
    ],
)
def test_unreadable_input_is_a_clear_error(arguments: list[str], input: bytes | str | None, code: int, message: str) -> None:
    result = validate(*arguments, input=input)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_template_variables_come_from_flags_and_the_environment() -> None:
    missing = validate(OPS)
    assert missing.exit_code == 1
    assert 'template variable "query" is not set; pass -V query=VALUE' in missing.stderr

    from_env = validate(OPS, "-E", "JOB_.*|query", "-o", "json", env={"query": "from-env"})
    assert from_env.exit_code == 0 and "from-env" in parameters(from_env)

    explicit = validate(OPS, "-E", "query", "-V", "query=from-flag", "-o", "json", env={"query": "from-env"})
    assert explicit.exit_code == 0
    assert "from-flag" in parameters(explicit) and "from-env" not in parameters(explicit)

    both = validate(OPS, "-V", "query=q", "-V", "start-time=2026-01-01", "--template-vars", "end-time=a=b", "-o", "json")
    assert parameters(both) == ["--query", "q", "--start-time", "2026-01-01", "--end-time", "a=b"]


def test_the_environment_regex_must_match_whole_names() -> None:
    partial = validate(OPS, "-E", "quer", env={"query": "from-env"})
    assert partial.exit_code == 1 and 'template variable "query" is not set' in partial.stderr


def test_no_template_leaves_placeholders_alone() -> None:
    text = "Type: batch\nName: '{{.x}}'\nTasks: [{Engine: {Type: docker, Params: {Image: alpine}}}]\n"
    result = validate("-", "--no-template", "-o", "json", input=text)
    assert result.exit_code == 0 and json.loads(result.stdout)["Name"] == "{{.x}}"
    assert validate(OPS, "--no-template").exit_code == 1  # the raw {{...}} is not a valid YAML list item


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["-V", "novalue"], "is not key=value"), (["-V", "=v"], "is not key=value"), (["-E", "("], "not a regular expression"),
     (["-o", "xml"], "Invalid value")],
)
def test_bad_options_are_usage_errors(arguments: list[str], message: str) -> None:
    result = validate(OPS, *arguments)
    assert result.exit_code == 2 and message in result.output


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "p2pnode", "job", "validate", "-", "-o", "json"],
        input=(EXAMPLES / "batch.yaml").read_text(), capture_output=True, text=True, check=False, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["Count"] == 2
