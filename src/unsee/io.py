"""Every file and folder unsee writes goes through here.

* Writes are atomic: a crash, a kill or a full disk never leaves a half-written output.
* An output folder is only ever replaced when unsee wrote it, for the same kind of output
  (a marker file says which); folders that hold the working folder or the home folder are
  never touched. Where ``--out`` points is checked before any compute is spent.
* Files and folders follow the user's umask, as every other tool's do.
* JSON is strict (no bare ``NaN``); checkpoints hold tensors in safetensors and everything
  else in JSON, so loading one never runs code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unsee.errors import UnseeError

#: Written into every output folder unsee builds: ``{"kind": ...}``.
MARKER = ".unsee-output.json"
#: Written first into every temporary build folder, with the owner's process id, so a
#: folder left by a killed run can be told from a user's and from a live run's.
TMP_MARKER = ".unsee-partial.json"
#: Output kinds: what ``--out`` of each command holds.
KINDS = ("artifact", "images", "scorecard", "export", "renders", "demo")
#: Free space an output location needs before compute starts (the largest artifacts are a
#: few hundred MB on SD; the check is there to fail early, not to promise space).
MIN_FREE_BYTES = 16 * 2**20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _follow_umask(path: Path, is_dir: bool) -> None:
    """``mkstemp``/``mkdtemp`` create 0600/0700; give the final output the usual modes."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UnseeError(f"could not write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        _follow_umask(tmp, is_dir=False)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UnseeError(f"could not write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def json_text(obj: Any) -> str:
    """Strict JSON (RFC 8259): a NaN or infinity is an error, not a bare ``NaN`` token."""
    try:
        return json.dumps(obj, indent=2, allow_nan=False) + "\n"
    except ValueError as exc:
        raise UnseeError(f"refusing to write a non-finite number into JSON ({exc})") from exc


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; an unreadable file or invalid JSON (or UTF-8) is one
    :class:`UnseeError` naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise UnseeError(f"{path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise UnseeError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; unreadable, invalid or not an object is one
    :class:`UnseeError` naming the file and ``what`` it should be (e.g. "a model manifest")."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise UnseeError(f"{path} is not {what} (not a JSON object)")
    return obj


def write_json(path: Path, obj: Any) -> Path:
    text = json_text(obj)

    def write(p: Path) -> None:
        p.write_text(text)

    return atomic_write(path, write)


# -- output folders ------------------------------------------------------------------------


def _protected(path: Path) -> str | None:
    """Why ``path`` may never be replaced, or None."""
    p = path.resolve()
    cwd = Path.cwd().resolve()
    if p == Path(p.anchor):
        return "it is the root folder"
    if p == Path.home().resolve():
        return "it is the home folder"
    if p == cwd or p in cwd.parents:
        return "it holds the working folder"
    return None


def output_kind(path: Path) -> str | None:
    """The kind of unsee output ``path`` holds (from its marker), else None.

    Artifacts and demo folders written before markers existed are recognised by their
    model card and their scorecards file.
    """
    path = Path(path)
    try:
        marker = json.loads((path / MARKER).read_text())
        if isinstance(marker, dict) and marker.get("kind") in KINDS:
            return str(marker["kind"])
    except (OSError, ValueError):
        pass
    try:
        card = json.loads((path / "model_card.json").read_text())
        if (
            isinstance(card, dict)
            and card.get("format") == "unsee-artifact/1"
            and (path / "delta.safetensors").is_file()
        ):
            return "artifact"
    except (OSError, ValueError):
        pass
    try:
        demo = json.loads((path / "scorecards.json").read_text())
        if isinstance(demo, dict) and "scorecards" in demo and (path / "report.html").is_file():
            return "demo"
    except (OSError, ValueError):
        pass
    return None


def _replace_blocker(path: Path, kind: str) -> str | None:
    """Why unsee may not replace the existing folder ``path`` with a ``kind`` output."""
    why = _protected(path)
    if why is None:
        found = output_kind(path)
        if found != kind:
            why = (
                f"it is not an unsee {kind} folder"
                if found is None
                else f"it holds an unsee {found}, not an unsee {kind}"
            )
    return why


def _check_replaceable(path: Path, kind: str) -> None:
    why = _replace_blocker(path, kind)
    if why:
        raise UnseeError(
            f"refusing to replace {path}: {why}; remove it yourself or choose another --out"
        )


def check_output_dir(path: Path, overwrite: bool, kind: str) -> None:
    """Check ``--out`` before any compute is spent; raises :class:`UnseeError`.

    A missing or empty folder is fine. An existing, non-empty one needs ``overwrite`` and
    must be an unsee output of the same ``kind``. The location must be writable and have
    some free space; temporary folders left by killed runs are removed.
    """
    path = Path(path)
    clean_partial(path)  # first: it may put back the output of a run killed mid-replace
    if path.exists() and not path.is_dir():
        raise UnseeError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if overwrite:
            _check_replaceable(path, kind)
        else:
            why = _replace_blocker(path, kind)  # never suggest --overwrite for a user's folder
            raise UnseeError(
                f"{path} exists and is not empty, and {why}; choose another --out"
                if why
                else f"{path} exists and is not empty (pass --overwrite to replace it)"
            )
    elif _protected(path):
        raise UnseeError(
            f"refusing to write into {path}: {_protected(path)}; choose an output folder of its own"
        )
    parent = path.absolute().parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UnseeError(f"cannot create {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnseeError(f"cannot write to {path}: {existing} is not writable")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise UnseeError(f"cannot write to {path}: only {free / 2**20:.1f} MB free on its disk")


def check_output_file(path: Path, overwrite: bool) -> None:
    """Check a JSON output file before compute: an existing file is replaced only with
    ``overwrite`` and only when it is JSON (what unsee writes), never a folder."""
    path = Path(path)
    if path.is_dir():
        raise UnseeError(f"{path} is a folder; give a file name for the JSON output")
    if path.exists():
        if not overwrite:
            raise UnseeError(f"{path} already exists (pass --overwrite to replace it)")
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UnseeError(
                f"refusing to replace {path}: it is not a JSON file unsee wrote; "
                "remove it yourself or choose another --out"
            ) from None
    existing = path.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UnseeError(f"cannot write {path}: {existing} is not a writable folder")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_partial(final: Path) -> list[Path]:
    """Remove temporary build folders of ``final`` left by killed runs; returns them.

    Only folders that carry unsee's partial marker and whose process is gone are removed;
    anything else beside ``final`` is left alone. A run killed between moving its previous
    output aside and moving the new one in left no ``final``: the previous one is put back.
    """
    final = Path(final)
    removed: list[Path] = []
    if not final.absolute().parent.is_dir():
        return removed
    for cand in final.absolute().parent.glob(f".{final.name}.*"):
        try:
            marker = json.loads((cand / TMP_MARKER).read_text())
            pid = int(marker["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            if marker.get("restore") and (cand / "old").is_dir() and not final.exists():
                os.replace(cand / "old", final)
            shutil.rmtree(cand, ignore_errors=True)
            removed.append(cand)
    return removed


def atomic_dir(
    final: Path, build: Callable[[Path], None], kind: str, overwrite: bool = False
) -> Path:
    """Build a folder in a temporary sibling and move it to ``final`` only when complete.

    An existing ``final`` is replaced only with ``overwrite`` and only when it is an unsee
    output of the same ``kind`` (or empty); the new folder gets the ``kind`` marker.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as exc:
        raise UnseeError(f"could not write {final}: {exc.strerror or exc}") from exc
    old: Path | None = None
    try:
        (tmp / TMP_MARKER).write_text(json.dumps({"pid": os.getpid()}))
        build(tmp)
        (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        (tmp / TMP_MARKER).unlink()
        _follow_umask(tmp, is_dir=True)
        if final.exists():
            if final.is_dir() and not any(final.iterdir()):
                final.rmdir()
            elif not overwrite:
                raise UnseeError(f"{final} already exists (pass --overwrite to replace it)")
            else:
                _check_replaceable(final, kind)
                # move the old folder aside first: at no moment is neither folder complete
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
                (old / TMP_MARKER).write_text(json.dumps({"pid": os.getpid(), "restore": True}))
                os.replace(final, old / "old")
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old / "old", final)
        raise UnseeError(f"could not write {final}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old / "old", final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def cache_root() -> Path:
    """Where unsee caches generated images: ``$UNSEE_CACHE``, else ``~/.cache/unsee``."""
    return Path(os.environ.get("UNSEE_CACHE") or Path.home() / ".cache" / "unsee")


# -- checkpoints: safetensors + JSON, never pickles ------------------------------------------


def _encode(obj: Any, tensors: dict[str, Any]) -> Any:
    """JSON-able form of nested dicts/lists/tuples of tensors and plain values; tensors are
    moved to ``tensors`` and replaced by a reference."""
    import torch

    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        t = obj.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory (a teacher and a best-epoch copy
        # may hold the same tensor): copy those
        shares = t.numel() and any(
            u.numel() and u.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
            for u in tensors.values()
        )
        tensors[key] = t.clone() if shares else t
        return {"__tensor__": key}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalars
        return _encode(obj.item(), tensors)
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def _decode(obj: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint atomically: one safetensors file whose tensors are the
    state's tensors and whose metadata holds the rest of the state as JSON."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    meta = json.dumps(_encode(state, tensors))
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"unsee_state": meta}))


def load_state(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_state`; a damaged or foreign file is a clear
    error. Nothing in the file is executed."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("unsee_state")
        tensors = load_file(str(path))
        if meta is None:
            raise ValueError("no unsee state in it")
        state = _decode(json.loads(meta), tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UnseeError(
            f"checkpoint {path} is damaged or not an unsee checkpoint ({exc}); "
            "start over without --resume"
        ) from exc
    if not isinstance(state, dict):
        raise UnseeError(f"checkpoint {path} is not an unsee checkpoint; start over")
    return state
