"""Portable names for base models, as artifact cards, exports and scorecards store them.

A card is read on other machines than the one that wrote it, so it must not keep a path
as typed (``../models/sd15`` means nothing elsewhere; ``/home/ana/sd15`` also leaks a
user's home). The base's *identity* is its fingerprint; the name only says where to find
it. :func:`portable_id` turns what a user typed into one of:

- a bundled model's name (``toyworld``) or a Hugging Face Hub id (``owner/name``), as is;
- a folder inside the Hub cache (``.../models--owner--name/snapshots/<rev>``): its hub id;
- a folder under ``$UNSEE_MODEL_ROOT``: ``$UNSEE_MODEL_ROOT/<path relative to it>``,
  found again on any machine that sets the variable to its own copy of the models;
- any other local folder or file: ``local:<name>`` (the name only; the user passes the
  folder again, and the fingerprint check says whether it is the right one).

:func:`resolve_id` turns a stored name back into something :func:`unsee.models.bundle.load_bundle`
takes, or says in one line what the user has to pass instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from unsee.errors import UnseeError

#: the environment variable naming the folder local base models are stored under
MODEL_ROOT_ENV = "UNSEE_MODEL_ROOT"
#: the bundled models: name -> the folder they load from
_WEIGHTS = Path(__file__).resolve().parent.parent / "toyworld" / "weights"
#: ToyWorld (pixel space, an unsee manifest) and ToyWorld-SD (a diffusers SD 1.x folder)
TOYWORLD_DIR = _WEIGHTS / "model"
TOYWORLD_SD_DIR = _WEIGHTS / "sd"
BUNDLED = {"toyworld": TOYWORLD_DIR, "toyworld-sd": TOYWORLD_SD_DIR}
LOCAL_PREFIX = "local:"
#: what a Hugging Face Hub repo id looks like (``owner/name``)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_HUB_CACHE_DIR = re.compile(r"^models--(?P<owner>[^/]+?)--(?P<name>[^/]+)$")


def _hub_cache_id(path: Path) -> str | None:
    """``owner/name`` for a folder inside a Hub cache snapshot, else None."""
    parts = path.parts
    for i, part in enumerate(parts[:-2]):
        m = _HUB_CACHE_DIR.match(part)
        if m and parts[i + 1] == "snapshots":
            return f"{m['owner']}/{m['name']}"
    return None


def portable_id(model_id: str) -> str:
    """The name a card stores for the base the user called ``model_id`` (see the module
    docstring); names that are not local paths are returned unchanged."""
    if model_id in BUNDLED or model_id.startswith(LOCAL_PREFIX):
        return model_id
    path = Path(model_id).expanduser()
    if not path.exists():  # a hub id, or a name that was never a local path
        return model_id
    path = path.resolve()
    hub = _hub_cache_id(path)
    if hub is not None:
        return hub
    root = os.environ.get(MODEL_ROOT_ENV)
    if root:
        try:
            rel = path.relative_to(Path(root).expanduser().resolve())
        except ValueError:
            pass
        else:
            return f"${MODEL_ROOT_ENV}/{rel.as_posix()}"
    return f"{LOCAL_PREFIX}{path.name}"


def is_hub_id(model_id: str | None) -> bool:
    """Whether ``model_id`` names a Hub repo (``owner/name``) and is not a local path."""
    if not model_id or model_id in BUNDLED or Path(model_id).expanduser().exists():
        return False
    return bool(HUB_ID.match(model_id))


def resolve_id(stored: str) -> str:
    """What to load for a card's stored base name: ``$UNSEE_MODEL_ROOT/...`` under this
    machine's root; a bundled name, hub id or (older cards) path as is. A ``local:`` name
    cannot be found again: one clear error asks for the folder."""
    prefix = f"${MODEL_ROOT_ENV}/"
    if stored.startswith(prefix):
        root = os.environ.get(MODEL_ROOT_ENV)
        if not root:
            raise UnseeError(
                f"the base model is {stored!r}: set {MODEL_ROOT_ENV} to the folder that "
                "holds it, or pass --model"
            )
        return str(Path(root).expanduser() / stored[len(prefix) :])
    if stored.startswith(LOCAL_PREFIX):
        raise UnseeError(
            f"the base model was a local folder named {stored[len(LOCAL_PREFIX) :]!r}; "
            "pass it with --model (its fingerprint is checked)"
        )
    return stored
