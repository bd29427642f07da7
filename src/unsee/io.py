"""Atomic file writes: a crash or a full disk never leaves a half-written output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unsee.errors import UnseeError


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UnseeError(f"could not write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def atomic_dir(final: Path, build: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Build a folder in a temporary sibling and move it to ``final`` only when complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        if final.exists():
            if not overwrite:
                raise UnseeError(f"{final} already exists (pass --overwrite to replace it)")
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UnseeError(f"could not write {final}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse an existing, non-empty output folder unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UnseeError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UnseeError(f"{path} exists and is not empty (pass --overwrite to replace it)")


def cache_root() -> Path:
    """Where unsee caches generated images: ``$UNSEE_CACHE``, else ``~/.cache/unsee``."""
    return Path(os.environ.get("UNSEE_CACHE") or Path.home() / ".cache" / "unsee")
