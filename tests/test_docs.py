"""Every ```python, ```sh and ```console sample in README.md and docs/*.md runs as written.

How a sample is run is said by an HTML comment on the line just before its
fence (no comment: run it):

    <!-- docs-test: continue -->      run after the previous sample of the file, as one script
    <!-- docs-test: file PATH -->     this sample is PATH in the sample project (e.g. myservice/main.py)
    <!-- docs-test: pytest -->        this sample is a test module: run it with pytest in the project
    <!-- docs-test: needs-aws -->     needs a real AWS account: Python is compiled and its imports
                                      run; shell is syntax-checked
    <!-- docs-test: skip REASON -->  not run (Python is still compiled); say why

Samples run in subprocesses, in a sample project holding every ``file``
sample, with HOME pointing at a temporary directory whose
``~/.simpleiot/myteam/config.json`` names a local issuer's pool, and
``SIOT_AUTHZ_JWKS_URL`` pointing at that issuer's JWKS on 127.0.0.1. Nothing
leaves loopback. ``console`` samples run their ``$ `` lines. New pages under
docs/ are picked up by themselves.

A ``python`` command line (a script, ``python -m pytest``, ``python -c``) runs in
a process forked from an interpreter that has already imported FastAPI,
pydantic, httpx, pytest and siot_authz (tests/warm_python.py): each sample
still has a process of its own, read from the same command line, and skips
the half second or more of imports (about 20 s of the suite's CPU time).
Shell samples run in bash, their ``python`` and ``siot-authz`` included.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from siot_authz.testing import LocalIssuer
from spare_keys import spare_key
from warm_python import WarmPython

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python", "sh", "console", "toml"}
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*([\w-]+)\s*(.*?)\s*-->\s*$")
_ACTIONS = {"run", "continue", "file", "pytest", "needs-aws", "skip"}
# What docs/testing.md tells users to put in their pytest configuration.
_STARLETTE_NOTICE = "ignore:Using `httpx` with `starlette.testclient` is deprecated"


@dataclass
class Sample:
    """One fenced block: where it is, its language, its code and what the marker says to do."""

    page: Path
    line: int
    language: str
    code: str
    action: str = "run"
    argument: str = ""
    followers: list[Sample] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"

    @property
    def script(self) -> str:
        """This sample and every ``continue`` sample after it, as one program."""
        return "\n\n".join([self.code, *(follower.code for follower in self.followers)])


def read_samples(page: Path) -> list[Sample]:
    """The page's samples in the languages we run, with their markers."""
    lines = page.read_text(encoding="utf-8").splitlines()
    samples: list[Sample] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening or not opening.group(1):
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        marker = _previous_marker(lines, index)
        if opening.group(1) in LANGUAGES:
            action, argument = marker or ("run", "")
            code = "\n".join(lines[index + 1 : end]) + "\n"
            samples.append(Sample(page, index + 1, opening.group(1), code, action, argument))
        index = end + 1
    return samples


def _previous_marker(lines: list[str], fence: int) -> tuple[str, str] | None:
    before = fence - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    found = _MARKER.match(lines[before]) if before >= 0 else None
    return (found.group(1), found.group(2)) if found else None


def chains() -> list[Sample]:
    """Samples to run, each carrying the ``continue`` samples that follow it."""
    heads: list[Sample] = []
    for page in PAGES:
        previous: Sample | None = None
        for sample in read_samples(page):
            if sample.action == "continue":
                assert previous is not None, f"{sample.where}: 'continue' with nothing before it"
                previous.followers.append(sample)
                continue
            heads.append(sample)
            previous = sample
    return heads


ALL = chains()


# -- the environment samples run in ----------------------------------------------------------


@pytest.fixture(scope="session")
def docs_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(key=spare_key(0)) as issuer:
        issuer.serve()
        yield issuer


@pytest.fixture(scope="session")
def sample_home(tmp_path_factory: pytest.TempPathFactory, docs_issuer: LocalIssuer) -> Path:
    home = tmp_path_factory.mktemp("home")
    team = home / ".simpleiot" / "myteam"
    team.mkdir(parents=True)
    config = {
        "region": docs_issuer.region,
        "cognitoUserPoolId": docs_issuer.user_pool_id,
        "cognitoClientId": docs_issuer.client_id,
    }
    (team / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return home


@pytest.fixture(scope="session")
def sample_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project holding every sample marked ``file PATH``."""
    project = tmp_path_factory.mktemp("project")
    for sample in ALL:
        if sample.action == "file":
            path = project / sample.argument
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(sample.code, encoding="utf-8")
            for parent in path.relative_to(project).parents:
                if parent != Path(".") and sample.language == "python":
                    (project / parent / "__init__.py").touch()
    return project


@pytest.fixture(scope="session")
def run_env(sample_home: Path, docs_issuer: LocalIssuer) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SIOT_AUTHZ_", "PYTEST_"))}
    env.update(
        {
            "HOME": str(sample_home),
            # As in the activated virtualenv the README installs into, even when the suite was
            # started as .venv/bin/python -m pytest: shell samples call siot-authz and python.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)]),
            "SIOT_AUTHZ_REGION": docs_issuer.region,
            "SIOT_AUTHZ_USER_POOL_ID": docs_issuer.user_pool_id,
            "SIOT_AUTHZ_CLIENT_IDS": docs_issuer.client_id,
            "SIOT_AUTHZ_JWKS_URL": docs_issuer.serve().url,
        }
    )
    return env


# What samples import, loaded once; each only if it imports without a warning (tests/warm_python.py).
_PRELOAD = [
    "pydantic",
    "fastapi",
    "fastapi.responses",
    "starlette.websockets",
    "starlette.testclient",
    "httpx",
    "prometheus_client",
    "prometheus_client.parser",
    "siot_authz",
    "siot_authz.testing",
    "siot_authz.revocation",
    "siot_authz.metrics",
    "siot_authz.aws_lambda",
]
# For ``python -m pytest``: preloaded through pytest's own import hook (WarmPython's ``like_pytest``),
# so the modules of distributions with a pytest plugin (siot-authz; anyio, which FastAPI imports;
# pytest-xdist) are rewritten as a fresh pytest rewrites them, and it does not warn (an error under
# -W error) that they were imported before it. Never hypothesis: its plugin behaves differently
# when it finds hypothesis already imported.
_PRELOAD_FOR_PYTEST = [
    "pytest",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "prometheus_client.parser",
    "fastapi",
    "fastapi.responses",
    "fastapi.testclient",
    "httpx",
    "siot_authz",
    "siot_authz.testing",
    "siot_authz.testing.pytest_plugin",
    "anyio.pytest_plugin",
    "xdist.plugin",
    "xdist.looponfail",
]


@pytest.fixture(scope="session")
def warm_python(run_env: dict[str, str]) -> Iterator[dict[str, WarmPython]]:
    """Warm interpreters: one for scripts and ``-c``, one for ``-m pytest``."""
    pythons = {
        "script": WarmPython(run_env, _PRELOAD),
        "pytest": WarmPython(run_env, _PRELOAD_FOR_PYTEST, like_pytest=True),
    }
    yield pythons
    for python in pythons.values():
        python.close()


def _run(
    command: list[str], sample: Sample, cwd: Path, env: dict[str, str], pythons: dict[str, WarmPython]
) -> None:
    if command[0] == sys.executable:
        runs_pytest = any(
            option == "-m" and module == "pytest" for option, module in itertools.pairwise(command)
        )
        python = pythons["pytest" if runs_pytest else "script"]
        result = python.run(command[1:], cwd=cwd, env=env, timeout=120)
    else:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{sample.where} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _console_commands(code: str) -> str:
    """The ``$ `` lines of a console transcript, continuation lines included."""
    commands: list[str] = []
    continuing = False
    for line in code.splitlines():
        if line.startswith("$ ") or continuing:
            commands.append(line[2:] if line.startswith("$ ") else line)
            continuing = line.endswith("\\")
    return "\n".join(commands) + "\n"


def _shell(sample: Sample) -> str:
    return _console_commands(sample.script) if sample.language == "console" else sample.script


def _imports_only(code: str) -> str:
    tree = ast.parse(code)
    return "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom))


# -- the tests ---------------------------------------------------------------------------------


def test_every_marker_is_known() -> None:
    for sample in ALL:
        for each in (sample, *sample.followers):
            assert each.action in _ACTIONS, f"{each.where}: unknown docs-test marker {each.action!r}"
            if each.action == "skip":
                assert each.argument, f"{each.where}: say why a sample is skipped"


@pytest.mark.parametrize("sample", ALL, ids=[sample.where for sample in ALL])
def test_sample_runs(
    sample: Sample,
    sample_project: Path,
    run_env: dict[str, str],
    warm_python: dict[str, WarmPython],
    tmp_path: Path,
) -> None:
    if sample.language == "python":
        compile(sample.script, sample.where, "exec")  # every Python sample must at least parse
    if sample.language == "toml":
        tomllib.loads(sample.script)  # TOML is only ever a ``file`` sample (pyproject.toml)
        assert sample.action in ("file", "skip"), f"{sample.where}: a TOML sample must be a file"
    if sample.action in ("skip", "file"):
        return  # ``file`` samples are run by the samples that use them
    project = tmp_path / "project"
    shutil.copytree(sample_project, project)
    if sample.action == "needs-aws":
        if sample.language == "python":
            (project / "sample_imports.py").write_text(_imports_only(sample.script), encoding="utf-8")
            _run([sys.executable, "sample_imports.py"], sample, project, run_env, warm_python)
        else:
            _run(["bash", "-n", "-c", _shell(sample)], sample, project, run_env, warm_python)
    elif sample.action == "pytest":
        # Where the README puts it, run as plain ``pytest`` runs it: ``-P`` keeps the working
        # folder off sys.path (``python -m`` would add it), so the imports of the user's own
        # package work only through the ``pythonpath`` the README's pyproject.toml sets (issue 17.6).
        (project / "tests").mkdir(exist_ok=True)
        (project / "tests" / "test_sample.py").write_text(sample.script, encoding="utf-8")
        command = [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
        _run(
            [*command, "-W", _STARLETTE_NOTICE, "tests/test_sample.py"], sample, project, run_env, warm_python
        )
    elif sample.language == "python":
        (project / "sample.py").write_text(sample.script, encoding="utf-8")
        _run([sys.executable, "-W", "error", "sample.py"], sample, project, run_env, warm_python)
    else:
        _run(["bash", "-euo", "pipefail", "-c", _shell(sample)], sample, project, run_env, warm_python)


def _uvicorn_targets() -> list[tuple[Sample, str]]:
    found = []
    for sample in ALL:
        if sample.language in ("sh", "console"):
            for target in re.findall(r"(?:uvicorn|gunicorn)\s+([\w.]+:\w+)", sample.script):
                found.append((sample, target))
    return found


@pytest.mark.parametrize(
    ("sample", "target"), _uvicorn_targets(), ids=lambda value: getattr(value, "where", value)
)
def test_server_commands_name_an_app_that_exists(
    sample: Sample,
    target: str,
    sample_project: Path,
    run_env: dict[str, str],
    warm_python: dict[str, WarmPython],
) -> None:
    # These samples start servers that run until stopped; what can drift is the app they name.
    module, attribute = target.split(":")
    check = f"import importlib; assert hasattr(importlib.import_module({module!r}), {attribute!r})"
    _run([sys.executable, "-c", check], sample, sample_project, run_env, warm_python)


def test_every_setting_is_in_the_configuration_tables() -> None:
    # Issue 17.14: additional_regions, jwks_file and max_token_lifetime_seconds were missing.
    from siot_authz import AuthSettings

    reference = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for name in AuthSettings.model_fields:
        row = f"| `{name}` | `SIOT_AUTHZ_{name.upper()}` |"
        assert row in reference, f"docs/configuration.md has no row for {name}"
        assert row in readme, f"README.md's configuration table has no row for {name}"


_SIMPLEIOT_FILE = re.compile(r"~/\.simpleiot|\$HOME/\.simpleiot|from_simpleiot_home")


@pytest.mark.parametrize("page", ["README.md", "docs/configuration.md", "docs/pools.md"])
def test_pages_whose_samples_read_the_simpleiot_config_say_what_happens_without_it(page: str) -> None:
    # Issue 17.16: these samples raise ValueError on a fresh machine, and the page said nothing.
    path = REPO_ROOT / page
    samples = [sample for sample in read_samples(path) if sample.action != "needs-aws"]
    assert any(_SIMPLEIOT_FILE.search(sample.code) for sample in samples), f"{page} reads no config.json"
    text = " ".join(path.read_text(encoding="utf-8").split())
    assert re.search(r"[Oo]n a machine (without|with no)", text), (
        f"{page} does not say what a fresh machine gets"
    )
