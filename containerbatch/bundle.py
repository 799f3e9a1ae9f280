"""The runner bundle: luigi, its pure-Python dependencies and containerbatch.

Prepared once on the submit host under ``state_dir/bundle/<hash>`` and bound
read-only into every container, so an image needs nothing but ``python3``.
Compiled extension modules are left out: every package in the bundle has a
pure-Python fallback, and the image's Python may differ from the host's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

import containerbatch

log = logging.getLogger(__name__)

ROOTS = ("luigi",)
#: shipped too when the submitting process uses them (their workflows import them on the node)
OPTIONAL_ROOTS = ("b2luigi",)
_SKIP_SUFFIXES = (".so", ".pyd", ".pyc", ".dylib")
#: files of a distribution's metadata that the bundle keeps (b2luigi asks importlib.metadata for its version)
_METADATA = ("METADATA", "entry_points.txt", "top_level.txt")


def roots() -> tuple[str, ...]:
    """luigi, and b2luigi when this process imported it."""
    return ROOTS + tuple(r for r in OPTIONAL_ROOTS if r in sys.modules)


def _closure(names: tuple[str, ...] | None = None) -> list[Distribution]:
    env = default_environment()
    seen: dict[str, Distribution] = {}
    todo = list(roots() if names is None else names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            log.warning("bundle: %s is required but not installed; leaving it out", name)
            continue
        seen[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):  # type: ignore[dict-item]
                todo.append(req.name)
    return sorted(seen.values(), key=lambda d: d.metadata["Name"].lower())


def _package_files() -> list[Path]:
    root = Path(containerbatch.__file__).resolve().parent
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def wanted(mode: str, runtime: str, image_has_luigi: bool) -> bool:
    """Whether a job gets the bundle: setting ``bundle`` (auto: unless host runtime or the image has luigi)."""
    return mode == "always" or (mode == "auto" and runtime != "host" and not image_has_luigi)


def bundle_dir(state_dir: str | os.PathLike[str]) -> str:
    """Where the bundle of this installation lives (built or not)."""
    return str(Path(state_dir) / "bundle" / bundle_key())


def bundle_key() -> str:
    digest = hashlib.sha256()
    for dist in _closure():
        digest.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    for path in _package_files():
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_bundle(state_dir: str | os.PathLike[str]) -> str:
    """Build the bundle if it is not there yet; returns its directory."""
    target = Path(bundle_dir(state_dir))
    if (target / ".complete").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        for dist in _closure():
            for file in dist.files or []:
                parts = Path(str(file)).parts
                if (
                    not parts
                    or parts[0] == ".."
                    or (parts[0].endswith((".dist-info", ".egg-info")) and parts[-1] not in _METADATA)
                    or "__pycache__" in parts
                    or str(file).endswith(_SKIP_SUFFIXES)
                    or ".so." in parts[-1]  # versioned shared libraries (xrootd.libs/libXrdCl.so.3)
                    or parts[0].endswith(".libs")
                ):
                    continue
                source = Path(str(dist.locate_file(file)))
                if source.is_file():
                    dest = staging / Path(*parts)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, dest)
        package_root = Path(containerbatch.__file__).resolve().parent
        for source in _package_files():
            dest = staging / "containerbatch" / source.relative_to(package_root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
        (staging / ".complete").write_text("containerbatch runner bundle\n")
        os.chmod(staging, 0o755)
        try:
            staging.rename(target)
        except OSError:  # another submitter built it meanwhile
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("runner bundle ready at %s", target)
    return str(target)
