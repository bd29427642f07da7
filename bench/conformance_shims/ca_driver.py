"""Runs Concept Ablation's official training (``diffusers/train.py`` of the user's clone,
the working directory) with its own command line, for ``bench/conformance.py``.

It is ``python diffusers/train.py ARGS`` (``main(parse_args())``) with three things
replaced, each because today's libraries or the model cannot run the release as it is:

* transformers 5 dropped ``CLIPFeatureExtractor`` (``model_pipeline.py:19`` imports it; it
  was an alias of ``CLIPImageProcessor``, which is what it names here; the pipeline only
  types an optional component with it);
* the loss mask of ``CustomDiffusionDataset.preprocess`` (``utils.py:166, 172-175``) is laid
  out on a VAE factor of 8 (SD 1.x), which cannot multiply the latents of a model with
  another factor (toyworld-sd: 4, 8x8 latents at 32 px); it is rebuilt at the model's factor
  by the same rule (the image's region less a one-latent-pixel border; all ones when the
  image overfills the crop). Only the rule for ``--noaug`` (the image at full size) and
  zoomed-in crops is needed: smaller scales are refused;
* ``CustomDiffusionPipeline.save_pretrained`` (``model_pipeline.py:228-248``) pickles the
  trained parameters (``torch.save`` to ``OUTPUT_DIR/delta.bin``); the same tensors, the
  same selection by ``--parameter_group``, are written as safetensors beside it
  (``delta.safetensors``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import transformers
from safetensors.torch import save_file

# model_pipeline.py:19 imports the alias transformers 5 removed; set on the module in
# sys.modules, which resolving a lazy name can replace
_processor = transformers.CLIPImageProcessor
sys.modules["transformers"].CLIPFeatureExtractor = _processor  # type: ignore[attr-defined]

sys.path.insert(0, os.path.join(os.getcwd(), "diffusers"))  # its modules import each other

# the clone's own modules, only on the path at run time
import model_pipeline  # type: ignore[import-not-found]  # noqa: E402
import train  # type: ignore[import-not-found]  # noqa: E402
import utils  # type: ignore[import-not-found]  # noqa: E402


def vae_factor(model: str) -> int:
    """Pixels per latent of the model's VAE, as diffusers' pipelines compute it."""
    config = json.loads((Path(model) / "vae" / "config.json").read_text())
    return int(2 ** (len(config["block_out_channels"]) - 1))


def latent_mask(factor: int) -> Any:
    """``preprocess`` with its mask at ``factor`` pixels per latent instead of 8."""
    preprocess = utils.CustomDiffusionDataset.preprocess

    def masked(self: Any, image: Any, scale: int, resample: Any) -> tuple[Any, Any]:
        if scale < self.size:
            raise SystemExit(
                f"ca_driver: a down-scaled image ({scale} < {self.size} px) needs the "
                "release's placement offsets; run with --noaug"
            )
        pixels, _ = preprocess(self, image, scale, resample)
        side = self.size // factor
        mask = np.ones((side, side))
        if scale == self.size:  # the whole image, placed at (0, 0): the border is dropped
            mask = np.zeros((side, side))
            mask[1 : side - 1, 1 : side - 1] = 1.0
        return pixels, mask

    return masked


def save_safetensors(self: Any, save_path: str, parameter_group: str = "cross-attn") -> None:
    """The tensors ``save_pretrained`` would pickle, as ``<save_path stem>.safetensors``."""
    keep = {
        "cross-attn": lambda n: "attn2.to_k" in n or "attn2.to_v" in n,
        "attn": lambda n: any(k in n for k in ("to_q", "to_k", "to_v", "to_out")),
        "full-weight": lambda n: True,
    }[parameter_group]
    tensors = {
        n: p.detach().float().cpu().contiguous() for n, p in self.unet.named_parameters() if keep(n)
    }
    save_file(tensors, str(Path(save_path).with_suffix(".safetensors")))


def main() -> None:
    args = train.parse_args()
    utils.CustomDiffusionDataset.preprocess = latent_mask(
        vae_factor(args.pretrained_model_name_or_path)
    )
    model_pipeline.CustomDiffusionPipeline.save_pretrained = save_safetensors
    train.main(args)


if __name__ == "__main__":
    main()
