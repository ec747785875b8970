"""A Python interpreter kept warm, forked once per command: ``python ...`` without the imports.

Each docs sample used to start a fresh interpreter that spent most of its time importing
FastAPI, pydantic, httpx, pytest and siot_authz before running a few lines of the sample. Here a
server process imports them once; each command is run in a child forked from it, so every
command still gets a process of its own (own globals, own ``sys.modules`` changes, own exit
code and output), with the command line read as ``python`` reads it:

- ``-W ARG`` (as many as given) and ``-P``, then ``SCRIPT``, ``-m MODULE`` or ``-c CODE`` and
  their arguments; anything else is refused rather than guessed;
- the warning filters start from the interpreter's start-up ones, then each ``-W`` is applied
  in order, as ``python`` does;
- ``sys.path[0]`` is the script's folder, the working folder (``-m``) or ``''`` (``-c``), and
  nothing with ``-P``; ``sys.argv`` is what ``python`` would give.

A module is only preloaded if importing it emits no warning at all (checked with every warning
turned into an error): a warning a fresh interpreter would raise at import, under ``-W error``,
is then still raised in the child, which imports that module itself. Hypothesis is never
preloaded: its pytest plugin behaves differently when it finds hypothesis already imported.

The server's environment is fixed when it starts (``site`` and ``PYTHON*`` variables are read
at start-up, as they are for any interpreter), so one server serves one environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_SERVER = Path(__file__).resolve()


class WarmPython:
    """Runs ``python`` command lines in children forked from one warmed-up interpreter."""

    def __init__(self, env: dict[str, str], preload: list[str]) -> None:
        self._env = dict(env)
        self._outputs = tempfile.TemporaryDirectory(prefix="warm-python-")
        self._server = subprocess.Popen(
            [sys.executable, "-P", str(_SERVER), *preload],
            env=self._env,
            cwd=self._outputs.name,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""
        # Not waited for here: the imports run while the caller does other work, until the first run.
        self._preloaded: list[str] | None = None
        self._count = 0

    @property
    def preloaded(self) -> list[str]:
        """The modules imported once and shared by every command (waits for the server's start-up)."""
        return self._started()

    def _started(self) -> list[str]:
        if self._preloaded is None:
            ready = self._reply(timeout=120)
            if ready.get("ready") is not True:
                raise RuntimeError(f"the warm interpreter did not start: {ready}")
            self._preloaded = list(ready["preloaded"])
        return self._preloaded

    def run(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python *argv`` in ``cwd``, as :func:`subprocess.run` with ``capture_output`` would."""
        if env != self._env:
            raise ValueError("a warm interpreter serves the one environment it was started with")
        self._started()  # the start-up must have ended before the first request
        self._count += 1
        stdout = Path(self._outputs.name) / f"{self._count}.out"
        stderr = Path(self._outputs.name) / f"{self._count}.err"
        request = {"argv": argv, "cwd": str(cwd), "stdout": str(stdout), "stderr": str(stderr)}
        assert self._server.stdin is not None
        self._server.stdin.write(json.dumps(request).encode() + b"\n")
        self._server.stdin.flush()
        started = self._reply(timeout=60)
        if "pid" not in started:
            raise RuntimeError(f"the warm interpreter refused {argv}: {started}")
        try:
            ended = self._reply(timeout=timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it ended as the deadline passed
                os.killpg(started["pid"], signal.SIGKILL)
            self._reply(timeout=60)
            raise subprocess.TimeoutExpired(["python", *argv], timeout) from None
        returncode = os.waitstatus_to_exitcode(ended["status"])
        out = stdout.read_text(encoding="utf-8", errors="replace")
        err = stderr.read_text(encoding="utf-8", errors="replace")
        stdout.unlink()
        stderr.unlink()
        return subprocess.CompletedProcess(["python", *argv], returncode, out, err)

    def _reply(self, timeout: float) -> dict[str, Any]:
        assert self._server.stdout is not None
        pipe = self._server.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if select.select([pipe], [], [], left)[0]:
                chunk = os.read(pipe, 65536)
                if not chunk:
                    return {"error": f"the warm interpreter exited ({self._server.wait()})"}
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        if self._server.stdin is not None:
            self._server.stdin.close()
        try:
            self._server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()
        if self._server.stdout is not None:
            self._server.stdout.close()
        self._outputs.cleanup()


# -- the server: runs as ``python -P warm_python.py MODULE...`` --------------------------------


def _send(message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(1, data) :]


def _read_line() -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)  # byte by byte: nothing is left buffered for a child to inherit
        if not chunk:
            return b""
        line += chunk
    return line


def _preload(modules: list[str]) -> list[str]:
    import importlib
    import warnings

    loaded = []
    for name in modules:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                importlib.import_module(name)
            except Exception:  # noqa: S112  # it warned (or failed): the child imports it, as python would
                continue
        loaded.append(name)
    return loaded


def _parse(argv: list[str]) -> tuple[list[str], bool, str, str, list[str]]:
    """``python``'s options we support: (-W options, -P, kind, target, arguments)."""
    warn_options: list[str] = []
    safe_path = False
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "-W":
            warn_options.append(argv[index + 1])
            index += 2
        elif arg.startswith("-W"):
            warn_options.append(arg[2:])
            index += 1
        elif arg == "-P":
            safe_path = True
            index += 1
        elif arg in ("-m", "-c"):
            return warn_options, safe_path, arg, argv[index + 1], argv[index + 2 :]
        elif arg.startswith("-"):
            raise ValueError(f"option {arg!r} is not supported by the warm interpreter")
        else:
            return warn_options, safe_path, "script", arg, argv[index + 1 :]
    raise ValueError("no script, -m or -c given")


def _child(
    request: dict[str, Any], parsed: tuple[list[str], bool, str, str, list[str]], startup: Any
) -> None:
    """Become ``python *argv``: never returns, ends by raising SystemExit as the interpreter would."""
    import runpy
    import traceback
    import types
    import warnings

    os.setpgid(0, 0)  # a timeout kills the command and whatever it started
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for source, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
        os.close(source)
    os.chdir(request["cwd"])

    warn_options, safe_path, kind, target, arguments = parsed
    filters, warnoptions, path = startup
    warnings.filters[:] = filters
    sys.warnoptions[:] = [*warnoptions, *warn_options]
    warnings._processoptions(warn_options)  # type: ignore[attr-defined]  # as python does at start-up
    sys.path[:] = path
    code = 0
    try:
        if kind == "script":
            sys.argv = [target, *arguments]
            if not safe_path:
                sys.path.insert(0, os.path.dirname(os.path.realpath(target)))
            runpy.run_path(target, run_name="__main__")
        elif kind == "-m":
            sys.argv = ["-m", *arguments]
            if not safe_path:
                sys.path.insert(0, os.getcwd())
            runpy._run_module_as_main(target, alter_argv=True)  # type: ignore[attr-defined]  # python -m
        else:
            sys.argv = ["-c", *arguments]
            if not safe_path:
                sys.path.insert(0, "")
            main = types.ModuleType("__main__")
            sys.modules["__main__"] = main
            exec(compile(target, "<string>", "exec"), main.__dict__)  # noqa: S102  # python -c
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        code = 1
    raise SystemExit(code)


def _serve(preload: list[str]) -> None:
    import warnings

    startup = (list(warnings.filters), list(sys.warnoptions), list(sys.path))
    _send({"ready": True, "preloaded": _preload(preload)})
    while line := _read_line():
        request = json.loads(line)
        try:
            parsed = _parse(request["argv"])
        except (ValueError, IndexError) as refused:
            _send({"error": str(refused)})
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, parsed, startup)
        with contextlib.suppress(OSError):  # the child got there first, or has already ended
            os.setpgid(pid, pid)  # set on both sides, so a kill right after this reply finds the group
        _send({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _send({"status": status})


if __name__ == "__main__":
    _serve(sys.argv[1:])
