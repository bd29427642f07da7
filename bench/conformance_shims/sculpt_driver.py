"""Runs Sculpting Memory's official training (``multi_dst_train.train`` of the user's clone,
the working directory) on a diffusers folder and ToyWorld image sets, for
``bench/conformance.py``.

It stands in for the release's launcher ``run_multiclass.py`` only, which cannot be pointed
at other concepts: its class lists and superclass mapping are ImageNette's, hard-coded
(``run_multiclass.py:15-26, 65-72``). What it does is the launcher's: load the pipeline
without safety checker, register the mask hooks on cross-attention, one
``SingleFolderImageDataset`` + shuffled ``DataLoader`` pair (concept, superclass) per
concept in order (several: the release's sequential rounds), then ``train`` with the
released config's training parameters (``multi_configs/xattn/*.yaml``) except the budget
given here. Image generation and evaluation at the end are off (``img_save_path=None``).
The trained UNet's parameters are written as safetensors to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys

from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file
from torch.utils.data import DataLoader

sys.path.insert(0, os.getcwd())  # the clone: its modules import each other by name

# the clone's own modules, only on the path at run time
from multi_dst_train import register_attention_hooks, train  # type: ignore[import-not-found]
from singel_dataset import SingleFolderImageDataset  # type: ignore[import-not-found]

#: the released config's mask densities (multi_configs/xattn/configs_sp0.5_scale0.25_mask100)
DENSITY = {"q": 0.5, "k": 0.5, "v": 0.5, "to_out": 0.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a diffusers Stable Diffusion folder")
    ap.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="CONCEPT_DIR=SUPERCLASS_DIR",
        help="image folders named by their prompt, one pair per concept, in round order",
    )
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--interval", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", required=True, help="the release's checkpoints and log")
    ap.add_argument("--out", required=True, help="the trained UNet's parameters")
    args = ap.parse_args()

    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None)
    pipe.to(args.device)
    register_attention_hooks(pipe.unet, DENSITY, True)
    loaders, mapping = [], {}
    for pair in args.data:
        forget, superclass = pair.split("=", 1)
        sets = [
            SingleFolderImageDataset(d, image_size=args.image_size) for d in (forget, superclass)
        ]
        mapping[sets[0].prompt] = sets[1].prompt
        loaders.append(
            {
                "train": DataLoader(sets[0], batch_size=args.batch_size, shuffle=True),
                "align": DataLoader(sets[1], batch_size=args.batch_size, shuffle=True),
            }
        )
    train(
        pipe,
        mapping,
        loaders,
        True,
        args.device,
        num_epochs=args.epochs,
        warmup_steps=args.warmup,
        mask_update_interval=args.interval,
        update_percent_dict=DENSITY,
        mask_metric="gradient",
        warmup=True,
        ca=True,
        decay=True,
        scale=0.25,
        scale_kd=0.25,
        initial_turnover_fraction=0.2,
        lr=args.lr,
        save_path=args.work,
        mixed_precision=None,
        log_file=os.path.join(args.work, "train.log"),
        img_save_path=None,
    )
    save_file(
        {n: p.detach().float().cpu().contiguous() for n, p in pipe.unet.named_parameters()},
        args.out,
    )


if __name__ == "__main__":
    main()
