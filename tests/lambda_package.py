"""Build a Lambda deployment zip of siot_authz and the example's functions, for this machine, offline.

Shared by tests/test_lambda_package.py (which runs the zip with sockets
refused) and bench/lambda_cold_start.py (which reports its size).
docs/lambda.md builds the same layout for Lambda's platform with
``pip install --platform ... --only-binary=:all: --target``; here the wheel
goes in with ``pip install --no-deps --no-index --target`` and its
dependencies are copied from this environment's installed distributions.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "lambda"


def requirement_names(distribution: str) -> set[str]:
    """``distribution`` and everything it needs at run time (with the extras asked for), by normalized name."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, str]] = set()
    pending = [(canonicalize_name(distribution), "")]
    while pending:
        name, extra = pending.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
                continue
            needed = canonicalize_name(requirement.name)
            pending += [(needed, "")] + [(needed, wanted) for wanted in requirement.extras]
    return {name for name, _ in seen}


def _copy_distribution(name: str, target: Path) -> None:
    distribution = importlib.metadata.distribution(name)
    for file in distribution.files or []:
        source = Path(str(distribution.locate_file(file)))
        if ".." in file.parts or "__pycache__" in file.parts or not source.is_file():
            continue  # scripts outside site-packages, and bytecode (the zip gets its own)
        destination = target / file
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


def build_distributions(out: Path) -> None:
    """Build the sdist and, from it, the wheel into ``out``; no isolation: the backend is the test extra's."""
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def build_function_zip(work: Path, wheel: Path | None = None) -> Path:
    """Lay out the function folder in ``work`` from ``wheel`` (built here if None) and zip it; returns the zip."""
    if wheel is None:
        build_distributions(work / "dist")
        (wheel,) = (work / "dist").glob("siot_authz-*.whl")
    target = work / "function"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in sorted(requirement_names("siot-authz") - {"siot-authz"}):
        _copy_distribution(name, target)
    for source in EXAMPLE.glob("*.py"):
        shutil.copy2(source, target / source.name)
    archive = work / "function.zip"
    # Deflated as a deployment zip is, at the fastest level: its layout is under test, not its size
    # (the default level spent over a second of CPU on the dependencies' binaries).
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zipped:
        for path in sorted(target.rglob("*")):
            if path.is_file():
                zipped.write(path, path.relative_to(target))
    return archive
