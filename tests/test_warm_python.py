"""The docs samples' warm interpreter reads a command line as ``python`` does (tests/warm_python.py).

Each command runs both ways, in a fresh ``python`` and forked from the warm one, and must give
the same exit code, output, ``sys.argv``, ``sys.path`` and warning filters: a sample that fails
when a user runs it must fail the same way in tests/test_docs.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warm_python import WarmPython

_PROBE = """\
import json, sys, warnings
print(json.dumps({
    "name": __name__,
    "argv": [arg.rsplit("/", 1)[-1] for arg in sys.argv],
    "path": sys.path,
    "filters": [(action, str(message), category.__name__, str(module), line)
                for action, message, category, module, line in warnings.filters],
    "warnoptions": sys.warnoptions,
}))
if "--warn" in sys.argv:
    warnings.warn("a deprecated call", DeprecationWarning, stacklevel=1)
    warnings.warn("a user warning", UserWarning, stacklevel=1)
if "--fail" in sys.argv:
    raise LookupError("the sample is wrong")
if "--atexit" in sys.argv:
    import atexit
    atexit.register(print, "an atexit callback ran")
if "--thread" in sys.argv:  # a non-daemon thread outliving the script is waited for
    import threading, time
    threading.Thread(target=lambda: (time.sleep(0.2), print("the thread ended"))).start()
if "--unflushed" in sys.argv:
    sys.stdout.write("no newline, never flushed")
if "--close-stdout" in sys.argv:
    sys.stdout.close()
if "--exit" in sys.argv:
    sys.exit(sys.argv[-1])
"""
# Warns when imported: never preloaded, so -W error still fails a command that imports it.
_NOISY = "import warnings\nwarnings.warn('imported a noisy module', UserWarning, stacklevel=2)\nVALUE = 1\n"

COMMANDS = [
    ["probe.py"],
    ["probe.py", "one", "--warn"],
    ["-W", "error", "probe.py", "--warn"],
    ["-W", "error::UserWarning", "-W", "ignore::DeprecationWarning", "probe.py", "--warn"],
    ["-Werror", "probe.py"],
    ["probe.py", "--fail"],
    ["probe.py", "--exit", "3"],
    ["probe.py", "--exit", "a message"],
    # How the command ends: a fork leaves before the interpreter's teardown, after every other step.
    ["probe.py", "--atexit", "--thread", "--unflushed"],
    ["probe.py", "--atexit", "--exit", "4"],
    ["probe.py", "--close-stdout"],
    ["probe.py", "--thread", "--fail"],
    ["-m", "probe", "two"],
    ["-P", "-m", "probe"],  # -P keeps the working folder off sys.path: probe is not found
    ["-c", "import probe", "three"],
    ["-P", "-c", "import probe"],
    ["-c", "import noisy; print(noisy.VALUE)"],
    ["-W", "error", "-c", "import noisy"],
    ["-W", "error", "-c", "import fastapi, siot_authz; print(siot_authz.__name__)"],
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("warm-project")
    (folder / "probe.py").write_text(_PROBE, encoding="utf-8")
    (folder / "modules").mkdir()
    (folder / "modules" / "noisy.py").write_text(_NOISY, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def env(project: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "PYTHON"))}
    env["PYTHONPATH"] = str(project / "modules")
    return env


@pytest.fixture(scope="module")
def warm(env: dict[str, str]) -> Iterator[WarmPython]:
    python = WarmPython(env, ["fastapi", "siot_authz", "noisy"])
    yield python
    python.close()


def test_a_module_that_warns_on_import_is_not_preloaded(warm: WarmPython) -> None:
    assert warm.preloaded == ["fastapi", "siot_authz"]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_command_runs_as_a_fresh_python_runs_it(
    argv: list[str], warm: WarmPython, project: Path, env: dict[str, str]
) -> None:
    fresh = subprocess.run(
        [sys.executable, *argv], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    forked = warm.run(argv, cwd=project, env=env, timeout=120)
    assert forked.returncode == fresh.returncode
    assert forked.stdout == fresh.stdout
    # Tracebacks name the runner's frames; the last line (the error, or the exit message) must match.
    assert forked.stderr.strip().splitlines()[-1:] == fresh.stderr.strip().splitlines()[-1:]


def test_a_command_that_outlives_its_timeout_is_killed(
    warm: WarmPython, project: Path, env: dict[str, str]
) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run(["-c", "import time; time.sleep(60)"], cwd=project, env=env, timeout=0.5)
    assert (
        warm.run(["-c", "print('still serving')"], cwd=project, env=env, timeout=120).stdout
        == "still serving\n"
    )


# -- spawned commands: servers the tests stop and restart ----------------------------------------

_SERVE = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))  # as uvicorn ends on SIGTERM: cleanly, its own way
print(os.environ.get("WARM_TEST_SETTING"), flush=True)
if "--exit" in sys.argv:
    sys.exit(int(sys.argv[-1]))
time.sleep(60)
"""


@pytest.fixture(scope="module")
def serving(env: dict[str, str], project: Path) -> Iterator[WarmPython]:
    (project / "serve.py").write_text(_SERVE, encoding="utf-8")
    python = WarmPython(env, ["fastapi"], free_prefixes=("WARM_TEST_",))
    yield python
    python.close()


def _wait_for_output(path: Path) -> str:
    deadline = time.monotonic() + 30
    while not path.exists() or not path.read_text(encoding="utf-8").endswith("\n"):
        assert time.monotonic() < deadline, "the spawned command never wrote its line"
        time.sleep(0.01)
    return path.read_text(encoding="utf-8")


def test_a_spawned_command_runs_until_stopped_with_its_own_environment(
    serving: WarmPython, project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    process = serving.spawn(["serve.py"], cwd=project, env={**env, "WARM_TEST_SETTING": "a"}, stdout=output)

    assert _wait_for_output(output) == "a\n"
    assert process.poll() is None  # still running
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.05)
    process.terminate()
    assert process.wait(timeout=30) == 7  # its SIGTERM handler ran: a process of its own
    assert process.poll() == 7


def test_spawned_commands_run_side_by_side_and_end_by_themselves(
    serving: WarmPython, project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    first = serving.spawn(
        ["serve.py"], cwd=project, env={**env, "WARM_TEST_SETTING": "b"}, stdout=tmp_path / "1"
    )
    second = serving.spawn(
        ["serve.py", "--exit", "3"], cwd=project, env={**env, "WARM_TEST_SETTING": "c"}, stdout=tmp_path / "2"
    )

    assert second.wait(timeout=30) == 3
    assert _wait_for_output(tmp_path / "2") == "c\n"
    assert _wait_for_output(tmp_path / "1") == "b\n"
    assert first.poll() is None
    assert os.getpgid(first.pid) == first.pid  # a group of its own, as the timeout of run() needs
    first.kill()
    assert first.wait(timeout=30) == -9


def test_a_variable_outside_the_free_prefixes_must_be_the_servers(
    serving: WarmPython, warm: WarmPython, project: Path, env: dict[str, str]
) -> None:
    # Anything else may have been read at start-up or by a preloaded module: refused, never ignored.
    with pytest.raises(ValueError, match="PYTHONHASHSEED"):
        serving.spawn(["serve.py"], cwd=project, env={**env, "PYTHONHASHSEED": "1"})
    # A server with no free prefix serves exactly its own environment.
    with pytest.raises(ValueError, match="WARM_TEST_SETTING"):
        warm.run(["-c", "pass"], cwd=project, env={**env, "WARM_TEST_SETTING": "d"}, timeout=60)


# -- python -m pytest: modules of pytest plugins preloaded as pytest imports them ---------------

# What a sample's pytest sees of the modules it marks for rewriting (those of distributions with a
# pytest plugin: anyio, siot_authz), and of one it does not (fastapi): who loaded each.
_PLUGIN_PROBE = """\
import sys


def test_plugin_modules_are_loaded_as_pytest_loads_them():
    print()
    for name in ("anyio", "anyio.pytest_plugin", "siot_authz", "siot_authz.testing.pytest_plugin", "fastapi"):
        print("LOADER", name, type(sys.modules[name].__loader__).__name__)
"""
# As tests/test_docs.py runs a pytest sample: warnings are errors, pytest's own included.
_PYTEST = ["-P", "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-W", "error", "test_plugins.py"]


@pytest.fixture(scope="module")
def pytest_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("warm-pytest")
    (folder / "test_plugins.py").write_text(_PLUGIN_PROBE, encoding="utf-8")
    return folder


def _loaders(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("LOADER")]


def test_pytest_commands_see_plugin_modules_preloaded_through_its_hook_as_a_fresh_pytest_does(
    pytest_project: Path, env: dict[str, str]
) -> None:
    fresh = subprocess.run(
        [sys.executable, *_PYTEST], cwd=pytest_project, env=env, capture_output=True, text=True, timeout=120
    )
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "AssertionRewritingHook" in "".join(_loaders(fresh.stdout))  # the probe does tell them apart
    preload = ["pytest", "anyio", "siot_authz.testing.pytest_plugin"]
    python = WarmPython(env, preload, like_pytest=True)
    try:
        assert python.preloaded == preload
        forked = python.run(_PYTEST, cwd=pytest_project, env=env, timeout=120)
    finally:
        python.close()

    assert forked.returncode == 0, forked.stdout + forked.stderr
    assert _loaders(forked.stdout) == _loaders(fresh.stdout)


def test_a_plugin_module_preloaded_by_a_plain_import_fails_a_pytest_command_as_too_early(
    pytest_project: Path, env: dict[str, str]
) -> None:
    # Why the hook: imported before pytest could rewrite it, anyio makes pytest warn (an error here).
    python = WarmPython(env, ["pytest", "anyio"])
    try:
        forked = python.run(_PYTEST, cwd=pytest_project, env=env, timeout=120)
    finally:
        python.close()

    assert forked.returncode != 0
    assert "Module already imported so cannot be rewritten; anyio" in forked.stdout + forked.stderr
