"""LoRA exports of an erasure: its UNet delta factored by truncated SVD.

Two file formats, both plain safetensors:

* ``lora`` (diffusers / peft): ``pytorch_lora_weights.safetensors`` with keys
  ``unet.<module>.lora_A.weight`` (r, in[, kh, kw]) and ``unet.<module>.lora_B.weight``
  (out, r[, 1, 1]), plus ``unet.<module>.lora_B.bias`` (out,) when a bias changed (peft's
  ``lora_bias``), and the peft ``LoraConfig`` in the ``lora_adapter_metadata`` header
  (per-module ranks, alpha = rank, so every module has scale 1).
  ``pipe.load_lora_weights(folder)`` loads it (needs ``peft``).
* ``kohya`` (the single file A1111 and ComfyUI read): ``lora_unet_<module with _>``
  ``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (one value for the file, with
  ``up`` pre-scaled by rank / alpha: readers apply ``alpha / rank`` per module, and diffusers
  ignores per-module alphas), and full-difference entries ``.diff`` (weight) and
  ``.diff_b`` (bias) for what a LoRA cannot hold.

A weight delta ``D`` of shape (out, in) or, for a convolution, (out, in, kh, kw) flattened
to (out, in*kh*kw), is approximated by ``up @ down`` with ``up = U_r sqrt(S_r)`` and
``down = sqrt(S_r) V_r^T``; ``down`` keeps the conv kernel (r, in, kh, kw) and ``up`` is a
1x1 conv (out, r, 1, 1), the usual LoRA/LoCon layout. The rank is the smallest that keeps
an ``energy`` fraction of ``sum(S^2)``, capped by ``rank``, and never above the numerical
rank, so a rank-1 UCE edit stays rank 1. Residuals are relative Frobenius norms,
``||D - up @ down|| / ||D||``, computed from the stored (cast) factors in float64.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from unsee.card_schema import ModelCard, parse_card
from unsee.errors import UnseeError

Format = Literal["lora", "kohya"]
FORMATS: tuple[str, ...] = ("lora", "kohya")
PEFT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default file name
REPORT_NAME = "lora_export.json"
#: ``--energy`` when neither it nor ``--rank`` is given: per tensor at most
#: sqrt(1 - 0.999) = 3.2 % relative Frobenius error.
DEFAULT_ENERGY = 0.999
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


@dataclass
class TensorRow:
    """How one delta tensor is carried by the export.

    ``kind``: ``lora`` (factored), ``lora_bias`` (peft ``lora_B.bias``), ``diff`` /
    ``diff_b`` (kohya full difference) or ``left_out``. ``norm`` is ``||D||_F``;
    ``rel_error`` is ``||D - carried||_F / ||D||_F`` (1.0 when left out).
    """

    tensor: str
    shape: list[int]
    kind: str
    norm: float
    rel_error: float
    rank: int | None = None
    max_rank: int | None = None


@dataclass
class LoraExport:
    """An export held in memory before it is written.

    ``tensors``: the file's contents; ``metadata``: its safetensors header;
    ``carried``: parameter name -> what the file adds to that UNet parameter (float32, the
    parameter's shape), used to check the export against the full delta.
    """

    fmt: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    rows: list[TensorRow]
    carried: dict[str, torch.Tensor] = field(default_factory=dict)
    fusable: bool = True  # peft can merge it into the base (``pipe.fuse_lora()``)

    def summary(self) -> dict[str, Any]:
        """Totals: ranks, parameter count, total and left-out relative Frobenius norms."""
        total = math.sqrt(sum(r.norm**2 for r in self.rows)) or 1.0
        err = math.sqrt(sum((r.norm * r.rel_error) ** 2 for r in self.rows))
        left = [r for r in self.rows if r.kind == "left_out"]
        ranks = [r.rank for r in self.rows if r.kind == "lora" and r.rank]
        lora_rows = [r for r in self.rows if r.kind == "lora"]
        worst = max(lora_rows, key=lambda r: r.rel_error, default=None)
        return {
            "format": self.fmt,
            "tensors": len(self.rows),
            "lora_modules": len(lora_rows),
            "rank_min": min(ranks, default=0),
            "rank_max": max(ranks, default=0),
            "rank_total": int(sum(ranks)),
            "file_parameters": int(sum(t.numel() for t in self.tensors.values())),
            "delta_norm": total if self.rows else 0.0,
            "rel_error_total": err / total,
            "rel_error_lora_worst": worst.rel_error if worst else 0.0,
            "rel_error_lora_worst_tensor": worst.tensor if worst else None,
            "left_out": [r.tensor for r in left],
            "left_out_norm_fraction": math.sqrt(sum(r.norm**2 for r in left)) / total,
            # held exactly outside the LoRA factors (lora_B.bias, .diff, .diff_b): what a
            # reader that skips those entries (diffusers' kohya loader) misses
            "full_difference_norm_fraction": math.sqrt(
                sum(r.norm**2 for r in self.rows if r.kind in ("lora_bias", "diff", "diff_b"))
            )
            / total,
            "fuse_lora_works": self.fusable,
        }


def module_kinds(unet: torch.nn.Module) -> dict[str, tuple[str, tuple[int, ...], bool]]:
    """Module name -> (``linear`` | ``conv`` | ``other``, weight shape, has a bias) for every
    module with a weight: what a LoRA can target (``torch.nn.Linear``, 2-D convolutions)."""
    out: dict[str, tuple[str, tuple[int, ...], bool]] = {}
    for name, m in unet.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor):
            continue
        if isinstance(m, torch.nn.Linear):
            kind = "linear"
        elif isinstance(m, torch.nn.Conv2d) and m.groups == 1:
            kind = "conv"
        else:
            kind = "other"
        out[name] = (kind, tuple(w.shape), isinstance(getattr(m, "bias", None), torch.Tensor))
    return out


def choose_rank(
    s: torch.Tensor, shape: Sequence[int], rank: int | None, energy: float | None
) -> tuple[int, int]:
    """(chosen rank, numerical rank) from singular values ``s`` (descending, float64).

    The numerical rank counts ``s > s[0] * max(shape) * eps(float32)``. The chosen rank is
    the smallest keeping ``energy`` of ``sum(s^2)`` (all of it when ``energy`` is None),
    capped by ``rank``, at least 1.
    """
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0, 0
    tol = float(s[0]) * max(shape) * torch.finfo(torch.float32).eps
    full = int((s > tol).sum())
    r = full
    if energy is not None:
        cum = torch.cumsum(s[:full] ** 2, 0) / float((s**2).sum())
        r = min(r, int(torch.searchsorted(cum, torch.tensor(energy - 1e-12, dtype=cum.dtype))) + 1)
    if rank is not None:
        r = min(r, rank)
    return max(1, r), full


def factor(
    d: torch.Tensor, rank: int | None, energy: float | None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Truncated SVD of a weight delta.

    ``d``: (out, in) or (out, in, kh, kw). Returns ``(down, up, r, numerical_rank)`` with
    ``down`` (r, in) or (r, in, kh, kw) and ``up`` (out, r) or (out, r, 1, 1), in ``dtype``.
    """
    m = d.detach().to("cpu", torch.float64).reshape(d.shape[0], -1)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    r, full = choose_rank(s, m.shape, rank, energy)
    r = max(r, 1)
    root = s[:r].sqrt()
    up = (u[:, :r] * root).to(dtype)
    down = (root[:, None] * vh[:r]).to(dtype)
    if d.dim() == 4:
        down = down.reshape(r, *d.shape[1:])
        up = up.reshape(d.shape[0], r, 1, 1)
    return down.contiguous(), up.contiguous(), r, full


def lora_product(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``up @ down`` in float32, in the weight's shape (out, in) or (out, in, kh, kw)."""
    r = down.shape[0]
    w = up.float().reshape(up.shape[0], r) @ down.float().reshape(r, -1)
    return w.reshape(up.shape[0], *down.shape[1:])


def _rel(d: torch.Tensor, carried: torch.Tensor) -> float:
    dn = float(d.double().norm())
    return float((d.double() - carried.double()).norm()) / dn if dn else 0.0


Kinds = Mapping[str, tuple[str, tuple[int, ...], bool]]


def build_export(
    delta: Mapping[str, torch.Tensor],
    kinds: Kinds,
    fmt: str,
    rank: int | None = None,
    energy: float | None = None,
    dtype: torch.dtype = torch.float32,
    lora_bias: bool = True,
) -> LoraExport:
    """Factor ``delta`` (UNet parameter name -> erased minus base) into a ``fmt`` file.

    ``kinds`` comes from :func:`module_kinds` on the base UNet. Weights of linear and conv
    modules become LoRA factors. A changed bias of such a module goes into ``lora_B.bias``
    (``lora``; a zero rank-1 LoRA is added when its weight did not change) or ``.diff_b``
    (``kohya``). Any other tensor (norms) goes into ``.diff`` / ``.diff_b`` (``kohya``) or
    is left out (``lora``, which has no full-difference entry) and reported. With
    ``lora_bias=False`` bias changes are left out of a ``lora`` file too: peft cannot
    ``fuse_lora()`` a ``lora_B.bias`` into a layer without a bias (``to_k``, ``to_v``).
    """
    if fmt not in FORMATS:
        raise UnseeError(f"unknown LoRA format {fmt!r}; use one of {', '.join(FORMATS)}")
    check_rank_rule(rank, energy)
    rows: list[TensorRow] = []
    carried: dict[str, torch.Tensor] = {}
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    biases: dict[str, torch.Tensor] = {}
    diffs: dict[str, torch.Tensor] = {}  # kohya key suffix -> tensor
    pending: dict[str, tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, int, int]] = {}
    for name in sorted(delta):
        d = delta[name].detach().to("cpu", torch.float32)
        module, _, attr = name.rpartition(".")
        if module not in kinds:
            raise UnseeError(f"tensor {name!r} of the delta is not in this UNet")
        kind = kinds[module][0]
        norm = float(d.double().norm())
        lora_able = kind in ("linear", "conv")
        if lora_able and attr == "weight":
            pending[name] = (module, d, *factor(d, rank, energy, torch.float32))
        elif lora_able and attr == "bias" and fmt == "lora" and lora_bias:
            biases[module] = d.to(dtype)
            carried[name] = biases[module].float()
            rows.append(TensorRow(name, list(d.shape), "lora_bias", norm, _rel(d, carried[name])))
        elif fmt == "kohya" and attr in ("weight", "bias"):
            key = _kohya_name(module) + (".diff" if attr == "weight" else ".diff_b")
            diffs[key] = d.to(dtype).contiguous()
            carried[name] = diffs[key].float()
            rows.append(
                TensorRow(name, list(d.shape), key.rsplit(".", 1)[1], norm, _rel(d, carried[name]))
            )
        else:
            rows.append(TensorRow(name, list(d.shape), "left_out", norm, 1.0))
    # kohya readers (A1111, ComfyUI, diffusers) scale each module by alpha / rank, and
    # diffusers' kohya loader ignores per-module alphas when they differ: one alpha for
    # all, with ``up`` pre-scaled by rank / alpha, means the same in all three
    ranks = Counter(r for *_, r, _full in pending.values())
    alpha = float(ranks.most_common(1)[0][0]) if ranks else 1.0
    for name, (module, d, down, up, r, full) in pending.items():
        scale = r / alpha if fmt == "kohya" else 1.0
        down, up = down.to(dtype), (up * scale).to(dtype)
        factors[module] = (down, up)
        carried[name] = lora_product(down, up) / scale
        rows.append(
            TensorRow(
                name,
                list(d.shape),
                "lora",
                float(d.double().norm()),
                _rel(d, carried[name]),
                r,
                full,
            )
        )
    rows.sort(key=lambda row: row.tensor)
    if fmt == "lora":
        for module in biases:
            if module not in factors:  # bias changed, weight did not: zero rank-1 LoRA
                shape = kinds[module][1]
                down = torch.zeros(1, *shape[1:], dtype=dtype)
                up = torch.zeros(shape[0], 1, *([1, 1] if len(shape) == 4 else []), dtype=dtype)
                factors[module] = (down, up)
        tensors, metadata = _peft_tensors(factors, biases, dtype)
    else:
        tensors, metadata = _kohya_tensors(factors, diffs, alpha)
    fusable = not biases or all(kinds[m][2] for m in factors)
    return LoraExport(fmt, tensors, metadata, rows, carried, fusable)


def _kohya_name(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def _peft_tensors(
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    biases: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """diffusers/peft keys and the ``LoraConfig`` (alpha = rank per module) as metadata."""
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for module, (down, up) in factors.items():
        tensors[f"unet.{module}.lora_A.weight"] = down
        tensors[f"unet.{module}.lora_B.weight"] = up
        if biases:
            b = biases.get(module)
            tensors[f"unet.{module}.lora_B.bias"] = (
                b if b is not None else torch.zeros(up.shape[0], dtype=dtype)
            ).contiguous()
        ranks[module] = int(down.shape[0])
    r = Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    pattern = {m: k for m, k in ranks.items() if k != r}
    config = {
        "r": r,
        "lora_alpha": r,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted(ranks),
        "lora_bias": bool(biases),
        "use_dora": False,
        "init_lora_weights": True,
    }
    packed = {f"unet.{k}": v for k, v in config.items()}
    return tensors, {"format": "pt", "lora_adapter_metadata": json.dumps(packed, sort_keys=True)}


def _kohya_tensors(
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    diffs: Mapping[str, torch.Tensor],
    alpha: float,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """kohya keys: ``lora_down`` / ``lora_up`` / ``alpha`` (one value for every module;
    ``up`` already carries rank / alpha), then ``.diff`` / ``.diff_b``."""
    tensors: dict[str, torch.Tensor] = {}
    for module, (down, up) in factors.items():
        key = _kohya_name(module)
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    tensors.update(diffs)
    return tensors, {"ss_network_module": "networks.lora", "format": "pt"}


def kohya_for_diffusers(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The part of a kohya state dict diffusers' ``load_lora_weights`` accepts: its SD
    loader refuses ``.diff`` / ``.diff_b`` keys, so they are dropped."""
    return {
        k: v
        for k, v in tensors.items()
        if k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))
    }


def write_files(tmp: Path, export: LoraExport, file_stem: str) -> str:
    """Write the export's safetensors file into folder ``tmp``; returns its file name."""
    name = PEFT_WEIGHT_NAME if export.fmt == "lora" else f"{file_stem}.safetensors"
    from unsee.io import atomic_write

    # through atomic_write: the file follows the umask (safetensors alone creates it 0600)
    atomic_write(tmp / name, lambda p: save_file(export.tensors, str(p), metadata=export.metadata))
    return name


# -- checking the export on the UNet's outputs -----------------------------------------


def probe_inputs(
    unet: torch.nn.Module,
    context: torch.Tensor,
    latent_shape: Sequence[int],
    num_train_timesteps: int,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed UNet inputs: every prompt context (P, L, D) at 4 timesteps (999/750/500/250 of
    1000). Returns ``x`` (4P, C, h, w) standard normal from ``seed``, ``t`` (4P,) and the
    context repeated (4P, L, D)."""
    steps = [int(num_train_timesteps * f) - (1 if f == 1 else 0) for f in (1, 0.75, 0.5, 0.25)]
    p = context.shape[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(steps) * p, *latent_shape, generator=g)
    t = torch.tensor([s for s in steps for _ in range(p)])
    ctx = context.repeat(len(steps), 1, 1)
    dev = next(unet.parameters()).device
    dt = next(unet.parameters()).dtype
    return x.to(dev, dt), t.to(dev), ctx.to(dev, dt)


@torch.no_grad()
def output_residual(
    unet: torch.nn.Module,
    delta: Mapping[str, torch.Tensor],
    carried: Mapping[str, torch.Tensor],
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """UNet outputs of base, base + delta (merged) and base + carried (the export).

    ``unet`` holds the base weights and is restored. Returns ``relative``:
    ``||f_export - f_merged||_F / ||f_merged - f_base||_F`` (the fraction of the edit's
    effect on the output that the export misses), ``max_abs`` (its largest entry) and
    ``edit_max_abs`` (largest ``|f_merged - f_base|``).
    """
    x, t, ctx = inputs
    params = dict(unet.named_parameters())
    orig = {n: params[n].detach().clone() for n in delta}

    def run(add: Mapping[str, torch.Tensor]) -> torch.Tensor:
        for n, o in orig.items():
            d = add.get(n)
            params[n].copy_(o if d is None else o + d.to(o.device, o.dtype))
        return unet(x, t, ctx).sample.double().cpu()

    try:
        base = run({})
        merged = run(delta)
        exported = run(carried)
    finally:
        for n, o in orig.items():
            params[n].copy_(o)
    edit = float((merged - base).norm())
    err = float((exported - merged).norm())
    return {
        "relative": err / edit if edit else 0.0,
        "max_abs": float((exported - merged).abs().max()),
        "edit_max_abs": float((merged - base).abs().max()),
        "inputs": int(x.shape[0]),
    }


def combined_delta(deltas: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Sum of several artifacts' deltas (float32), as applying them all does."""
    out: dict[str, torch.Tensor] = {}
    for delta in deltas:
        for n, d in delta.items():
            out[n] = out[n] + d.float() if n in out else d.float().clone()
    return out


def rank_rule(rank: int | None, energy: float | None) -> str:
    """How ranks were chosen, in words."""
    parts = []
    if energy is not None:
        parts.append(f"smallest rank keeping {energy:g} of the squared singular values")
    if rank is not None:
        parts.append(f"at most rank {rank}")
    return ", ".join(parts) if parts else "full numerical rank"


def export_lora(
    bundle: Any,
    cards: Sequence[Mapping[str, Any] | ModelCard],
    delta: Mapping[str, torch.Tensor],
    out_dir: Path,
    fmt: str,
    rank: int | None = None,
    energy: float | None = None,
    dtype: str = "fp32",
    lora_bias: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a ``fmt`` LoRA export of ``delta`` to ``out_dir`` (atomically) and return its
    report (also written as ``lora_export.json``).

    ``bundle`` holds the *base* model (its UNet is used for module kinds and the output
    check, and left unchanged); ``cards`` are the artifacts' model cards; ``delta`` maps
    UNet parameter names to erased minus base (the artifacts' deltas summed). The folder
    gets the weights file, ``lora_export.json`` (per-tensor rank and residual, totals, the
    UNet output residual on fixed probe inputs) and a Hugging Face ``README.md``.
    """
    from unsee.cards import lora_readme
    from unsee.io import atomic_dir, write_json

    typed = [parse_card(c, "an applied artifact's card") for c in cards]
    if dtype not in DTYPES:
        raise UnseeError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    export = build_export(
        delta, module_kinds(bundle.unet), fmt, rank, energy, DTYPES[dtype], lora_bias=lora_bias
    )
    prompts = list(dict.fromkeys([name for card in typed for name in card.concept_names] + [""]))
    inputs = probe_inputs(
        bundle.unet,
        bundle.encode_prompts(prompts),
        bundle.latent_shape,
        int(bundle.scheduler_config.get("num_train_timesteps", 1000)),
    )
    residual = output_residual(bundle.unet, delta, export.carried, inputs)
    base = bundle.portable_id
    report: dict[str, Any] = {
        "format": fmt,
        "rank_rule": rank_rule(rank, energy),
        "rank": rank,
        "energy": energy,
        "dtype": dtype,
        "base": {
            "model_id": base,
            "fingerprint": typed[0].base.fingerprint if typed else None,
        },
        "artifacts": [c.id for c in typed],
        "summary": export.summary(),
        "output_residual": {
            **residual,
            "prompts": prompts,
            "definition": "||f_export - f_merged|| / ||f_merged - f_base|| "
            "over the UNet outputs of the probe inputs",
        },
        "tensors": [vars(r) for r in export.rows],
    }
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(out_dir).name) or "unsee_lora"

    def build(tmp: Path) -> None:
        name = write_files(tmp, export, stem)
        report["file"] = name
        report["file_bytes"] = (tmp / name).stat().st_size
        write_json(tmp / REPORT_NAME, report)
        (tmp / "README.md").write_text(lora_readme(typed, str(bundle.model_id), fmt, name, report))

    atomic_dir(Path(out_dir), build, "export", overwrite=overwrite)
    return report


def check_rank_rule(rank: int | None, energy: float | None) -> None:
    """One clear :class:`UnseeError` for a rank below 1 or an energy outside (0, 1]."""
    if rank is not None and rank < 1:
        raise UnseeError(f"--rank must be a positive integer (got {rank})")
    if energy is not None and not (0.0 < energy <= 1.0 and math.isfinite(energy)):
        raise UnseeError(f"--energy must be in (0, 1] (got {energy})")


def summary_line(out: Path, report: dict[str, Any]) -> str:
    """What ``unsee export --format lora|kohya`` prints: ranks, size and residuals."""
    s = report["summary"]
    o = report["output_residual"]
    lines = [
        f"{report['format']} export written to {Path(out) / report['file']}: "
        f"{s['lora_modules']} LoRA modules, rank {s['rank_min']}-{s['rank_max']} "
        f"({report['rank_rule']}), {report['file_bytes'] / 1024:.1f} KiB {report['dtype']}",
        f"  weight residual (relative Frobenius, all {s['tensors']} delta tensors): "
        f"{s['rel_error_total']:.3g}; worst LoRA tensor {s['rel_error_lora_worst']:.3g}",
        f"  UNet output residual on {o['inputs']} probe inputs: {o['relative']:.3g} of the "
        f"edit's change (max abs {o['max_abs']:.3g}, edit max abs {o['edit_max_abs']:.3g})",
    ]
    if s["left_out"]:
        lines.append(
            f"  left out ({report['format']} cannot hold them): {len(s['left_out'])} "
            f"tensor(s), {s['left_out_norm_fraction']:.3g} of the edit's norm: "
            + ", ".join(s["left_out"][:4])
            + (" ..." if len(s["left_out"]) > 4 else "")
        )
    full = [r for r in report["tensors"] if r["kind"] in ("diff", "diff_b", "lora_bias")]
    if full:
        lines.append(
            f"  held as full differences: {len(full)} tensor(s) "
            f"({', '.join(sorted({r['kind'] for r in full}))}), "
            f"{s['full_difference_norm_fraction']:.3g} of the edit's norm"
        )
    if not s["fuse_lora_works"]:
        lines.append(
            "  note: bias changes ride in lora_B.bias, so peft cannot fuse_lora() "
            "this file (layers without a bias); --no-lora-bias leaves them out instead"
        )
    return "\n".join(lines)
