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

For ``python -m pytest`` commands, ``like_pytest=True`` preloads through pytest's own
assertion-rewriting import hook, marked as pytest marks it at start-up (every top-level module
of a distribution with a pytest plugin: anyio, which FastAPI imports, siot_authz...). Those
modules are then rewritten exactly as a fresh ``pytest`` would rewrite them, and pytest knows
them as rewritten: it does not warn that they were imported too early (an error under
``-W error``), which is what kept FastAPI and siot_authz out of that preload.

The server's environment is fixed when it starts (``site`` and ``PYTHON*`` variables are read
at start-up, as they are for any interpreter), so one server serves one environment; only
variables named with one of ``free_prefixes`` may differ per command (the child is given the
command's environment), for variables no preloaded module reads at import.

:meth:`WarmPython.spawn` starts a command without waiting for it (a server process the test
talks to, stops and restarts), with a handle offering what ``subprocess.Popen`` does for that.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_SERVER = Path(__file__).resolve()


class WarmPython:
    """Runs ``python`` command lines in children forked from one warmed-up interpreter."""

    def __init__(
        self,
        env: dict[str, str],
        preload: list[str],
        *,
        free_prefixes: tuple[str, ...] = (),
        like_pytest: bool = False,
    ) -> None:
        self._env = dict(env)
        self._free_prefixes = free_prefixes
        self._lock = threading.Lock()  # one request and its replies at a time
        self._outputs = tempfile.TemporaryDirectory(prefix="warm-python-")
        self._server = subprocess.Popen(
            [sys.executable, "-P", str(_SERVER), *(["--like-pytest"] if like_pytest else []), *preload],
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
        with self._lock:
            self._count += 1
            stdout = Path(self._outputs.name) / f"{self._count}.out"
            stderr = Path(self._outputs.name) / f"{self._count}.err"
            started = self._start(argv, cwd, env, stdout, stderr, detach=False)
            try:
                ended = self._reply(timeout=timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it ended as the deadline passed
                    os.killpg(started, signal.SIGKILL)
                self._reply(timeout=60)
                raise subprocess.TimeoutExpired(["python", *argv], timeout) from None
        returncode = os.waitstatus_to_exitcode(ended["status"])
        out = stdout.read_text(encoding="utf-8", errors="replace")
        err = stderr.read_text(encoding="utf-8", errors="replace")
        stdout.unlink()
        stderr.unlink()
        return subprocess.CompletedProcess(["python", *argv], returncode, out, err)

    def spawn(
        self, argv: list[str], *, cwd: Path, env: dict[str, str], stdout: Path | None = None
    ) -> WarmProcess:
        """Start ``python *argv`` in ``cwd`` and return at once, its output to ``stdout`` (or nowhere)."""
        with self._lock:
            pid = self._start(argv, cwd, env, stdout, stdout, detach=True)
        return WarmProcess(self, pid, ["python", *argv])

    def _start(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        stdout: Path | None,
        stderr: Path | None,
        *,
        detach: bool,
    ) -> int:
        differing = {key for key in env.keys() ^ self._env.keys() if not key.startswith(self._free_prefixes)}
        differing |= {
            key
            for key in env.keys() & self._env.keys()
            if env[key] != self._env[key] and not key.startswith(self._free_prefixes)
        }
        if differing:
            raise ValueError(
                f"a warm interpreter serves the environment it was started with: {sorted(differing)} differ"
            )
        self._started()  # the start-up must have ended before the first request
        request = {
            "argv": argv,
            "cwd": str(cwd),
            "stdout": None if stdout is None else str(stdout),
            "stderr": None if stderr is None else str(stderr),
            "env": env if self._free_prefixes else None,
            "detach": detach,
        }
        started = self._ask(request)
        if "pid" not in started:
            raise RuntimeError(f"the warm interpreter refused {argv}: {started}")
        pid: int = started["pid"]
        return pid

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._server.stdin is not None
        self._server.stdin.write(json.dumps(request).encode() + b"\n")
        self._server.stdin.flush()
        return self._reply(timeout=60)

    def poll_status(self, pid: int) -> int | None:
        """The wait status of a spawned command once it has ended (it is then reaped), else None."""
        with self._lock:
            reply = self._ask({"poll": pid})
        if "error" in reply:
            raise RuntimeError(f"the warm interpreter could not poll {pid}: {reply['error']}")
        status: int | None = reply["status"]
        return status

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


class WarmProcess:
    """A command started by :meth:`WarmPython.spawn`: ``poll``, ``wait``, ``terminate`` and ``kill`` as on ``Popen``."""

    def __init__(self, python: WarmPython, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._python = python

    def poll(self) -> int | None:
        if self.returncode is None:
            status = self._python.poll_status(self.pid)
            if status is not None:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (returncode := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.01)
        return returncode

    def send_signal(self, number: int) -> None:
        # Only while not reaped: a reaped pid may already belong to another process.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


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


def _preload(modules: list[str], *, like_pytest: bool = False) -> list[str]:
    import importlib
    import warnings

    hook = _pytest_import_hook() if like_pytest else None
    loaded = []
    try:
        for name in modules:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: S112  # it warned (or failed): the child imports it, as python would
                    continue
            loaded.append(name)
    finally:
        if hook is not None:
            sys.meta_path.remove(hook)  # each command's pytest installs its own
    return loaded


def _pytest_import_hook() -> Any:
    """pytest's assertion-rewriting import hook, installed and marked as ``pytest`` does at start-up.

    Marked: every top-level module of each distribution with a pytest plugin (entry point
    ``pytest11``), as :meth:`_pytest.config.Config._mark_plugins_for_rewrite` marks them.
    """
    import _pytest.assertion
    from _pytest.config import get_config

    config = get_config()  # what a command's pytest builds first; only its hook is kept
    hook = _pytest.assertion.install_importhook(config)
    config._mark_plugins_for_rewrite(hook, disable_autoload=False)
    return hook


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
    out = os.open(request["stdout"] or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if request["stderr"] == request["stdout"]:  # one file for both, as stderr=STDOUT gives
        err = os.dup(out)
    else:
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for source, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
        os.close(source)
    os.chdir(request["cwd"])
    if request.get("env") is not None:
        os.environ.clear()
        os.environ.update(request["env"])

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
    except SystemExit as ended:
        # What the interpreter exits with once it has handled this (a message is printed, then 1).
        _exit_status[:] = [0 if ended.code is None else ended.code if isinstance(ended.code, int) else 1]
        raise
    except BaseException:
        traceback.print_exc()
        code = 1
    _exit_status[:] = [code]
    raise SystemExit(code)


#: Set in a child once its command has ended: the status it exits with.
_exit_status: list[int] = []


def _end_without_teardown() -> None:
    """A child's last step at exit: leave before the interpreter tears down its modules.

    Registered before anything else, so it runs after every other exit step: non-daemon
    threads joined, the command's own ``atexit`` callbacks run (and those of the preloaded
    modules), standard streams flushed (120 if that fails, as python gives). What is skipped is
    freeing every object at exit, which in a forked child touches, and so copies, every page it
    shares with the server: most of a short command's CPU time. Finalizers of objects still
    alive at exit do not run (python does not promise they will).
    """
    if not _exit_status:
        return  # the server itself: an ordinary exit
    status = _exit_status[0]
    for stream in (sys.stdout, sys.stderr):
        if stream is None or stream.closed:
            continue  # as python skips them
        try:
            stream.flush()
        except Exception:  # python's exit status when flushing fails
            status = 120
    os._exit(status)


def _serve(preload: list[str]) -> None:
    import warnings

    startup = (list(warnings.filters), list(sys.warnoptions), list(sys.path))
    like_pytest = preload[:1] == ["--like-pytest"]
    preloaded = _preload(preload[1:] if like_pytest else preload, like_pytest=like_pytest)
    # What is loaded now lives as long as any child: their garbage collections skip it, rather
    # than write to (and so copy) every page of it in each child.
    gc.freeze()
    _send({"ready": True, "preloaded": preloaded})
    detached: set[int] = set()  # spawned, not waited for: reaped when a poll finds them ended
    while line := _read_line():
        request = json.loads(line)
        if "poll" in request:
            _send(_poll(request["poll"], detached))
            continue
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
        if request.get("detach"):
            detached.add(pid)
            continue
        _, status = os.waitpid(pid, 0)
        _send({"status": status})
    for pid in detached:  # the tests' side has gone: stop what it left running
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _poll(pid: int, detached: set[int]) -> dict[str, Any]:
    if pid not in detached:
        return {"error": "not a running spawned command"}
    done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        return {"status": None}
    detached.discard(pid)
    return {"status": status}


if __name__ == "__main__":
    atexit.register(_end_without_teardown)  # first registered, so the last to run
    _serve(sys.argv[1:])
