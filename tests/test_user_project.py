"""A fresh user project, written only from the README and docs/testing.md, passes with no config and no warnings.

tests/user_project/ is that project: ``myservice/main.py`` is the README's
"Use it" sample, byte for byte, and its tests use only the documented
fixtures and helpers. It runs in a subprocess with HOME pointing at an empty
directory (so no ``~/.simpleiot`` config exists) and with every warning an
error, as a careful user's CI would, and with ``SIOT_AUTHZ_*`` variables a
developer may have left exported after running the server. That run is
the stricter one: a clean shell differs only by variables the kit never reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = Path(__file__).resolve().parent / "user_project"


def _readme_use_it_sample() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("<!-- docs-test: file myservice/main.py -->\n```python\n")[1].split("```")[0]


def test_the_project_is_written_exactly_the_readmes_way() -> None:
    assert (PROJECT / "myservice" / "main.py").read_text(encoding="utf-8") == _readme_use_it_sample()


# What a developer's shell may still hold from running the server. The kit must not read them:
# with them, ID tokens would be refused as token_use_mismatch and an expired one let in.
LEFTOVER_SERVER_VARIABLES = {
    "SIOT_AUTHZ_TOKEN_USE": "access",
    "SIOT_AUTHZ_LEEWAY_SECONDS": "120",
    "SIOT_AUTHZ_CLIENT_IDS": "someotherclient",
}


def test_a_users_suite_passes_without_real_config_and_without_warnings(tmp_path: Path) -> None:
    project = tmp_path / "myservice-project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SIOT_AUTHZ_", "PYTEST_"))}
    env.update(LEFTOVER_SERVER_VARIABLES)
    env["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-rA"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "8 passed" in output, output
    assert "warning" not in output.lower(), output
    assert not (home / ".simpleiot").exists()
