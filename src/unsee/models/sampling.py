"""DDIM sampling with classifier-free guidance, and the prediction spaces losses compare in.

Erasure methods and attacks compare predictions in a *loss space* (:data:`LOSS_SPACES`):
``native`` is the model's own output (epsilon on SD 1.x, v on SD 2.x and ToyWorld, x0 for
``sample`` models), ``epsilon`` converts every output to an epsilon prediction first
(:func:`to_eps`). At a fixed x_t the conversion is affine in the output, so a target made of
predictions at the same x_t with weights summing to one (negative guidance, an anchor's
prediction) is the same combination in either space; a data target (the noise drawn for a
training image) has its own form in each space (:func:`denoising_target`). The spaces differ
in how errors are weighted over t: an epsilon-space error is ``sqrt(eps_error_scale)`` times
the native one (:func:`eps_error_scale`), e.g. ``sqrt(alphabar_t)`` for v-prediction, which
is 0 at a zero-terminal-SNR model's last step.
Noise for image ``i`` comes from its own seed, so an image does not depend on the batch
it was drawn in: the same (prompt, seed) always gives the same image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from unsee.errors import UnseeError
from unsee.models.bundle import Bundle
from unsee.progress import progress_bar


def to_eps(
    output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Convert a UNet output to an epsilon prediction.

    ``alpha_bar``: cumulative signal fraction at each sample's timestep, broadcastable
    to ``x_t`` (e.g. shape (B, 1, 1, 1)). For v-prediction, eps = sqrt(a) v + sqrt(1-a) x_t.
    """
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - alpha_bar.sqrt() * output) / (1 - alpha_bar).sqrt()
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


#: ``native``: compare the model's own outputs; ``epsilon``: convert them to epsilon first.
LOSS_SPACES = ("native", "epsilon")


def to_loss_space(
    output: torch.Tensor,
    x_t: torch.Tensor,
    alpha_bar: torch.Tensor,
    prediction_type: str,
    space: str,
) -> torch.Tensor:
    """A UNet ``output`` (B, C, h, w) as a prediction in loss ``space``: itself (native) or
    its epsilon prediction (:func:`to_eps`; ``alpha_bar`` broadcastable to ``x_t``)."""
    if space == "native":
        return output
    if space == "epsilon":
        return to_eps(output, x_t, alpha_bar, prediction_type)
    raise ValueError(f"unknown loss space {space!r}; use one of {', '.join(LOSS_SPACES)}")


def denoising_target(
    x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str, space: str
) -> torch.Tensor:
    """What a perfect model predicts in loss ``space`` for x_t = sqrt(a) x0 + sqrt(1-a) noise:
    ``noise`` in epsilon space (and for epsilon models), v = sqrt(a) noise - sqrt(1-a) x0 for
    v-prediction, ``x0`` for sample prediction. Shapes as ``x0``; ``alpha_bar`` broadcastable."""
    if space not in LOSS_SPACES:
        raise ValueError(f"unknown loss space {space!r}; use one of {', '.join(LOSS_SPACES)}")
    if space == "epsilon" or prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def eps_error_scale(alpha_bar: torch.Tensor, prediction_type: str, space: str) -> torch.Tensor:
    """c(t) with ``|eps error|^2 = c(t) |error in loss space|^2`` at a fixed x_t, same shape
    as ``alpha_bar``: 1 in epsilon space and for epsilon models, alphabar for v-prediction,
    alphabar / (1 - alphabar) for sample prediction. Weights defined on epsilon errors (the
    KL bound's) are multiplied by it to weigh the same errors in the native space."""
    if space == "epsilon" or prediction_type == "epsilon":
        return torch.ones_like(alpha_bar)
    if prediction_type == "v_prediction":
        return alpha_bar
    if prediction_type == "sample":
        return alpha_bar / (1 - alpha_bar)
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def predict(
    bundle: Bundle,
    unet: torch.nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    space: str = "native",
) -> torch.Tensor:
    """Prediction (B, C, h, w) of ``unet`` at integer timesteps ``t`` (B,) under ``context``,
    in loss ``space`` (:data:`LOSS_SPACES`)."""
    t = t.to(x_t.device).expand(x_t.shape[0]) if t.ndim == 0 else t.to(x_t.device)
    out = unet(x_t, t, context).sample
    ab = bundle.alphas_cumprod()[t].view(-1, *([1] * (x_t.ndim - 1)))
    return to_loss_space(out, x_t, ab, bundle.prediction_type, space)


def initial_noise(bundle: Bundle, seeds: Sequence[int]) -> torch.Tensor:
    """Per-seed standard normal latents, shape (len(seeds), C, h, w)."""
    shape = bundle.latent_shape
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    ).to(bundle.device, bundle.dtype)


def _rescale_cfg(guided: torch.Tensor, cond: torch.Tensor, factor: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023): match the std of the conditional prediction."""
    dims = list(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return factor * rescaled + (1 - factor) * guided


@torch.no_grad()
def ddim_sample(
    bundle: Bundle,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 50,
    guidance: float | None = None,
    negative_prompts: Sequence[str] | None = None,
    stop_at: int | None = None,
    unet: torch.nn.Module | None = None,
    latents: torch.Tensor | None = None,
    guidance_rescale: float = 0.0,
    start_at: int = 0,
    context: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """DDIM (eta=0) with CFG from noise; returns ``(x, t)``.

    With ``stop_at=s`` the loop stops *before* DDIM index ``s`` (0 = noisiest) and returns
    x_t at that index and its training timestep ``t`` (partial sampling for ESD, KSCU).
    Without it, returns the final latents (B, C, h, w) and t = 0.
    ``start_at=r`` with ``latents`` (x at index r) resumes a trajectory instead of starting
    from noise (KSCU's trajectory reuse). ``guidance`` 1 or less skips the unconditional pass.
    ``context`` (B, L, D) is the conditional context to use instead of encoding ``prompts``
    (soft prompts of the attacks; ``prompts`` then only count the images).
    """
    if start_at and latents is None:
        raise ValueError("start_at needs the latents reached at that index")
    unet = bundle.unet if unet is None else unet
    g = bundle.default_guidance if guidance is None else guidance
    if not math.isfinite(g) or g < 0:
        raise UnseeError(f"guidance must be a finite number >= 0 (got {g})")
    sched = _ddim(bundle, steps)
    # latents restored from a checkpoint arrive on the CPU
    x = initial_noise(bundle, seeds) if latents is None else latents.to(bundle.device)
    cond = (
        bundle.encode_prompts(list(prompts))
        if context is None
        else context.to(bundle.device, bundle.dtype)
    )
    uncond = bundle.encode_prompts(
        list(negative_prompts) if negative_prompts is not None else [""] * len(prompts)
    )
    n_steps = steps if stop_at is None else stop_at
    timesteps = sched.timesteps
    for i in range(start_at, n_steps):
        t = timesteps[i]
        if g > 1.0:
            out = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample
            out_u, out_c = out.chunk(2)
            out = out_u + g * (out_c - out_u)
            if guidance_rescale > 0:
                out = _rescale_cfg(out, out_c, guidance_rescale)
        else:
            out = unet(x, t, cond).sample
        x = sched.step(out, t, x, eta=0.0).prev_sample
    t_final = int(timesteps[n_steps]) if stop_at is not None and n_steps < steps else 0
    return x, t_final


def check_guidance_and_seed(guidance: float | None, seed: int) -> None:
    """The sampling options every command checks before loading a model: a CFG scale that
    is finite and >= 0 (None: the model's default) and a non-negative seed."""
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise UnseeError(f"--guidance must be a finite number >= 0 (got {guidance})")
    if seed < 0:
        raise UnseeError(f"--seed must be >= 0 (got {seed})")


def _ddim(bundle: Bundle, steps: int):
    """A DDIM scheduler set to ``steps`` steps, which must lie in [1, training timesteps]."""
    sched = bundle.scheduler()
    n_train = int(sched.config.num_train_timesteps)
    if not 1 <= steps <= n_train:
        raise UnseeError(
            f"DDIM steps must be between 1 and the model's {n_train} training "
            f"timesteps (got {steps})"
        )
    sched.set_timesteps(steps)
    return sched


def ddim_timesteps(bundle: Bundle, steps: int) -> list[int]:
    """Training timestep of each DDIM index 0..steps-1 (index 0 is the noisiest)."""
    return [int(t) for t in _ddim(bundle, steps).timesteps]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def generate(
    bundle: Bundle,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 50,
    guidance: float | None = None,
    batch_size: int = 64,
    unet: torch.nn.Module | None = None,
    description: str = "generate",
    negative_prompts: Sequence[str] | None = None,
    contexts: torch.Tensor | None = None,
) -> np.ndarray:
    """Generate one image per (prompt, seed) pair; returns uint8 (N, H, W, 3).
    ``contexts`` (N, L, D): conditional contexts used instead of encoding ``prompts``."""
    if len(prompts) != len(seeds):
        raise ValueError("prompts and seeds must have the same length")
    out = []
    with progress_bar(len(prompts), description) as bar:
        for i in range(0, len(prompts), batch_size):
            neg = None if negative_prompts is None else negative_prompts[i : i + batch_size]
            lat, _ = ddim_sample(
                bundle,
                prompts[i : i + batch_size],
                seeds[i : i + batch_size],
                steps=steps,
                guidance=guidance,
                unet=unet,
                negative_prompts=neg,
                context=None if contexts is None else contexts[i : i + batch_size],
            )
            out.append(to_uint8(bundle.decode(lat)))
            bar.advance(len(lat))
    return np.concatenate(out)
