"""Shims for running an official erasure script on a bundled model, loaded by Python at
start-up because ``bench/conformance.py`` puts this folder on the subprocess's PYTHONPATH.

Each shim is off unless its environment variable is set, so the same start-up serves the
official script (every shim it needs) and unsee's own run (timing and seed only). The
official code itself is never edited; ``bench/conformance.py`` lists what ran in its
results (``SHIMS`` there says what each one does and why).

* ``UNSEE_CONFORMANCE_REDIRECT=HUB_ID=FOLDER``: ``from_pretrained(HUB_ID)`` loads FOLDER
  (``esd_sd.py`` hard-codes ``CompVis/stable-diffusion-v1-4`` and has no model option).
* ``UNSEE_CONFORMANCE_IMAGE_SIZE=PX``: pipelines draw their initial latents for PX x PX
  images whatever height and width they are asked for (``esd_sd.py`` hard-codes 1024).
* ``UNSEE_CONFORMANCE_DTYPE=float32``: every floating dtype a diffusers model or pipeline
  is loaded or moved with becomes this one (``esd_sd.py:83`` trains in bfloat16 with no
  option; this separates the precision from the method).
* ``UNSEE_CONFORMANCE_TORCHVISION_OPS=1``: when torchvision's compiled operators cannot
  load (PyPI's torchvision is a CUDA build; a CPU-only torch cannot load its ``_C``),
  declares the two operator schemas its ``_meta_registrations`` registers fake kernels
  for unconditionally, so ``import torchvision`` works for its pure-Python parts (the
  transforms Sculpting Memory's dataset uses); its detection operators stay absent.
* ``UNSEE_CONFORMANCE_SEED=N``: seeds ``random``, NumPy and torch (the official scripts
  draw timesteps and generator seeds from the unseeded ``random`` module).
* ``UNSEE_CONFORMANCE_TIMING=PATH``: writes ``{"steps": n, "first": t0, "last": t1,
  "peak_rss_kb": hwm}`` to PATH at exit: ``time.perf_counter`` after each optimiser step,
  whichever optimiser the script uses (the per-iteration time without start-up and model
  loading), and the process's own peak RSS (``VmHWM``; a child's ``ru_maxrss`` on Linux
  starts at its parent's high-water mark, which fork and exec carry over).
"""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any


def _redirect(spec: str) -> None:
    from diffusers import DiffusionPipeline, ModelMixin

    hub_id, folder = spec.split("=", 1)
    for cls in (DiffusionPipeline, ModelMixin):
        loader = cls.from_pretrained.__func__

        def load(klass: Any, name: Any, *args: Any, _loader: Any = loader, **kw: Any) -> Any:
            return _loader(klass, folder if name == hub_id else name, *args, **kw)

        cls.from_pretrained = classmethod(load)


def _image_size(px: int) -> None:
    from diffusers import StableDiffusionPipeline

    prepare = StableDiffusionPipeline.prepare_latents

    def prepare_latents(
        self: Any, batch: int, channels: int, height: int, width: int, *a: Any, **kw: Any
    ) -> Any:
        return prepare(self, batch, channels, px, px, *a, **kw)

    StableDiffusionPipeline.prepare_latents = prepare_latents


def _dtype(name: str) -> None:
    import torch
    from diffusers import DiffusionPipeline, ModelMixin

    want = getattr(torch, name)

    def swap(x: Any) -> Any:
        return want if isinstance(x, torch.dtype) and x.is_floating_point else x

    for cls in (DiffusionPipeline, ModelMixin):
        loader, move = cls.from_pretrained.__func__, cls.to

        def load(klass: Any, *args: Any, _loader: Any = loader, **kw: Any) -> Any:
            return _loader(klass, *args, **{k: swap(v) for k, v in kw.items()})

        def to(self: Any, *args: Any, _move: Any = move, **kw: Any) -> Any:
            return _move(self, *map(swap, args), **{k: swap(v) for k, v in kw.items()})

        cls.from_pretrained = classmethod(load)
        cls.to = to


_KEEP: list[Any] = []


def _torchvision_ops() -> None:
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    try:
        torch.ops.load_library(os.path.join(spec.submodule_search_locations[0], "_C.so"))
    except OSError:
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _KEEP.append(lib)  # a Library's definitions last as long as the object


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _timing(path: str) -> None:
    from torch.optim.optimizer import register_optimizer_step_post_hook

    times: list[float] = []
    register_optimizer_step_post_hook(lambda *_: times.append(time.perf_counter()))

    def write() -> None:
        first, last = (times[0], times[-1]) if times else (None, None)
        with open("/proc/self/status") as fh:
            hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
        with open(path, "w") as fh:
            json.dump({"steps": len(times), "first": first, "last": last, "peak_rss_kb": hwm}, fh)

    atexit.register(write)


if os.environ.get("UNSEE_CONFORMANCE_REDIRECT"):
    _redirect(os.environ["UNSEE_CONFORMANCE_REDIRECT"])
if os.environ.get("UNSEE_CONFORMANCE_IMAGE_SIZE"):
    _image_size(int(os.environ["UNSEE_CONFORMANCE_IMAGE_SIZE"]))
if os.environ.get("UNSEE_CONFORMANCE_DTYPE"):
    _dtype(os.environ["UNSEE_CONFORMANCE_DTYPE"])
if os.environ.get("UNSEE_CONFORMANCE_TORCHVISION_OPS"):
    _torchvision_ops()
if os.environ.get("UNSEE_CONFORMANCE_SEED"):
    _seed(int(os.environ["UNSEE_CONFORMANCE_SEED"]))
if os.environ.get("UNSEE_CONFORMANCE_TIMING"):
    _timing(os.environ["UNSEE_CONFORMANCE_TIMING"])
