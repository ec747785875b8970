"""The release artefacts: the sdist and wheel build, pass ``twine check``, and the wheel works once installed.

The wheel goes into a fresh venv with ``--no-deps --no-index`` (nothing is
downloaded); its dependencies come from this environment through a ``.pth``
file placed after the venv's own site-packages, so the installed wheel, not
this checkout, is what gets imported.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

PLUGIN_TEST = """
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import siot_authz
from siot_authz import CognitoAuth, Principal


def test_the_wheel_and_its_plugin(siot_auth_settings, siot_auth_headers):
    assert "site-packages" in siot_authz.__file__
    auth = CognitoAuth(siot_auth_settings)
    app = FastAPI(lifespan=auth.lifespan)

    @app.get("/me")
    async def me(principal: Principal = Depends(auth)) -> dict:
        return {"user": principal.username}

    with TestClient(app) as client:
        assert client.get("/me", headers=siot_auth_headers(username="ada")).json() == {"user": "ada"}
"""


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dist(built_dist: Path) -> Path:
    # Built once per run (tests/conftest.py), shared with tests/test_lambda_package.py.
    return built_dist


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    artefacts = sorted(dist.iterdir())
    assert sorted(path.suffix for path in artefacts) == [".gz", ".whl"]
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, artefacts)])


def test_the_wheel_installs_and_runs_the_cli_and_the_pytest_plugin(dist: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    # No pip inside the venv: ensurepip costs seconds of CPU, and this environment's pip
    # installs into the venv's interpreter just as well (``--python``), still from the wheel alone.
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ]
    )
    own_site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    )
    # Dependencies from this environment, after the venv's own packages (a .pth appends).
    (own_site / "zz_test_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHONPATH", "PYTEST_", "SIOT_AUTHZ_"))
    }

    help_text = _run([str(env_dir / "bin" / "siot-authz"), "--help"], env=env).stdout
    assert "contract" in help_text

    (tmp_path / "test_plugin.py").write_text(PLUGIN_TEST, encoding="utf-8")
    result = _run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_plugin.py"],
        cwd=tmp_path,
        env=env,
    )
    assert "1 passed" in result.stdout


def test_the_wheel_carries_the_apache_license_it_declares(dist: Path) -> None:
    # Issue 17: pyproject declares Apache-2.0, but there was no LICENSE file and no License-File.
    import zipfile

    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
        license_name = next(name for name in names if name.endswith(".dist-info/licenses/LICENSE"))
        shipped = archive.read(license_name).decode()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert shipped == (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in shipped
    assert "END OF TERMS AND CONDITIONS" in shipped
