"""Runs the official UnlearnDiffAtk (``src/execs/attack.py`` of OPTML-Group/Diffusion-MU-Attack,
the working directory is the clone's root) with its own command line, for
``bench/conformance.py``.

It is ``python src/execs/attack.py ARGS`` (run as ``__main__``, unedited) with the shims
below, each because the official code cannot run a ToyWorld concept on toyworld-sd or with
today's transformers as it is. The attacker (``attackers/text_grad_.py``) and the task's
loss, sampler and check loop (``tasks/classifier_.py``) run as released. Settings come from
the environment (:class:`Settings`); ``SHIMS`` in ``bench/conformance.py`` lists the same
shims with the official lines in its results.

* :func:`accept_concept`: ``attack.py:24`` accepts SD concepts only (``OneOf`` of fastargs).
* :func:`judge_checks`: ``classifier_.py:262-281`` sets ``success`` only for nudity
  (NudeNet), ImageNet objects (``microsoft/resnet-50`` from the hub) and harm (Q16); for
  the ToyWorld concept each check's one image is judged by unsee's ToyWorld judge.
* :func:`model_resolution` and :class:`ClassifierTorch`: the data set transform resizes to
  512 (``datasets.py:23, 72``) and every ``torch.randn`` of SD 1.x's 64x64 latents in
  ``classifier_.py`` (the loss noise, ``:80``; the check's ``512 // 8`` latents,
  ``:143-146``) is drawn at the model's latent side instead.
* :class:`ClassifierTorch`: the erased UNet is read from safetensors where
  ``classifier_.py:58`` ``torch.load``\\ s a pickle.
* :func:`transformers5`: ``CustomTextEncoder`` (``text_encoder.py:41-44, 74-81``) reaches
  for ``CLIPTextModel.text_model`` and passes ``causal_attention_mask`` to the encoder, both
  gone in transformers 5 (the official pins 4.33.2).
* :func:`fixed_timesteps`: ``n_samples``, the number of fixed timesteps
  (``classifier_.py:30``, 50), is a constructor default ``attack.py``'s config cannot reach.

Before the attack, :func:`check_encoder` compares the shimmed ``CustomTextEncoder`` with
``CLIPTextModel`` on the model's folder and stops the run if they differ: the text encoder
is what the attack differentiates through, so a wrong shim would change the attack.
"""

from __future__ import annotations

import functools
import os
import runpy
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

#: SD 1.x's latent side at 512 px, which classifier_.py hard-codes in its torch.randn calls
SD_LATENT = 64
#: largest |CustomTextEncoder - CLIPTextModel| accepted (float32 round-off, not a wrong mask)
ENCODER_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Settings:
    """What the shims need, from ``UDATK_*`` environment variables."""

    concept: str  # UDATK_CONCEPT: the ToyWorld concept (the config's task.concept)
    attribute: str  # UDATK_ATTRIBUTE: the judge's attribute for it (shape)
    image_size: int  # UDATK_IMAGE_SIZE: the model's resolution in pixels
    latent_size: int  # UDATK_LATENT_SIZE: its latent side
    timesteps: int  # UDATK_TIMESTEPS: n_samples
    model: str  # UDATK_MODEL: the diffusers folder, for the encoder check

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            env["UDATK_CONCEPT"],
            env["UDATK_ATTRIBUTE"],
            int(env["UDATK_IMAGE_SIZE"]),
            int(env["UDATK_LATENT_SIZE"]),
            int(env["UDATK_TIMESTEPS"]),
            env["UDATK_MODEL"],
        )


def accept_concept(concept: str) -> None:
    """Add ``concept`` to the one ``OneOf`` list that names SD concepts (``attack.py:24``,
    recognised by its ``church``); attack.py builds its sections when it runs, after this."""
    import fastargs.validation as validation  # type: ignore[import-not-found]

    init = validation.OneOf.__init__

    def one_of(self: Any, values: Any) -> None:
        values = list(values)
        init(self, [*values, concept] if "church" in values else values)

    validation.OneOf.__init__ = one_of


def judge_checks(task: Any, concept: str, attribute: str) -> None:
    """``task.eval`` (one check: the prompt drawn at the evaluation seed) also judges its
    image with unsee's ToyWorld judge when the task's concept is ``concept``: ``label`` is
    the judge's ``attribute`` label and ``success`` whether it is ``concept``, which
    ``text_grad_.py:195, 232`` read to stop."""
    from unsee.evaluate.judges import ToyWorldJudge

    judge = ToyWorldJudge()
    evaluate = task.eval

    def judged(self: Any, *args: Any, **kw: Any) -> dict[str, Any]:
        results: dict[str, Any] = evaluate(self, *args, **kw)
        if self.concept == concept:
            label = judge(np.array(results["image"])[None]).labels[attribute][0]
            results["label"] = label
            results["success"] = label == concept
        return results

    task.eval = judged


class ClassifierTorch:
    """``torch`` as ``classifier_.py`` sees it: a latent of SD 1.x's 64x64 is drawn at
    ``latent_size``, and a ``.safetensors`` checkpoint is read without unpickling; every
    other name (the global generator included: the official reseeding is kept) is torch's."""

    def __init__(self, latent_size: int) -> None:
        self.latent_size = latent_size

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def randn(self, *size: Any, **kw: Any) -> torch.Tensor:
        one = len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size))
        shape = tuple(size[0] if one else size)
        if shape[2:] == (SD_LATENT, SD_LATENT):
            shape = (*shape[:2], self.latent_size, self.latent_size)
        return torch.randn(shape, **kw)

    def load(self, f: Any, map_location: Any = "cpu", **kw: Any) -> Any:
        if str(f).endswith(".safetensors"):
            return load_file(str(f), device=str(map_location))
        return torch.load(f, map_location=map_location, **kw)


def model_resolution(datasets: Any, image_size: int) -> None:
    """The data set's images are resized and cropped to ``image_size`` instead of 512."""
    datasets.get_transform = functools.partial(datasets.get_transform, size=image_size)


class Encoder4(torch.nn.Module):
    """transformers 5's ``CLIPEncoder`` called as ``CustomTextEncoder`` calls 4.x's: the
    causal mask it builds is added to the attention mask (4.x added the two; 5 dropped the
    ``causal_attention_mask`` argument, so passed on it would be ignored and the encoder
    would attend both ways), and ``return_dict=False`` gives a tuple."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        causal_attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> Any:
        if causal_attention_mask is not None:
            attention_mask = (
                causal_attention_mask
                if attention_mask is None
                else attention_mask + causal_attention_mask
            )
        out = self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        return out.to_tuple() if return_dict is False else out


def transformers5(custom: Any) -> None:
    """``CustomTextEncoder`` built on a transformers 5 ``CLIPTextModel``: the model stands
    for its own ``text_model`` (5 merged the two; an attribute, not a submodule, so the
    module tree is unchanged), and its encoder is called through :class:`Encoder4`."""
    init = custom.__init__

    def init5(self: Any, text_encoder: Any) -> None:
        if not hasattr(text_encoder, "text_model"):
            object.__setattr__(text_encoder, "text_model", text_encoder)
        init(self, text_encoder)
        self.encoder = Encoder4(self.encoder)

    custom.__init__ = init5


def fixed_timesteps(task: Any, n: int) -> None:
    """``ClassifierTask`` fixes ``n`` timesteps instead of its ``n_samples`` default."""
    init = task.__init__

    def with_n(self: Any, *args: Any, **kw: Any) -> None:
        kw.setdefault("n_samples", n)
        init(self, *args, **kw)

    task.__init__ = with_n


def check_encoder(custom: Any, folder: str) -> float:
    """Largest |difference| between ``custom`` (a ``CustomTextEncoder``, shimmed) on one-hot
    embeddings, as the attack calls it, and ``CLIPTextModel`` on the ids, over a few prompts
    of ``folder``'s tokenizer (the official self-test, ``text_encoder.py:138-140``)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    model = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    encoder = custom(model)
    table = encoder.get_all_embedding()
    worst = 0.0
    for prompt in ("a star", "flamingo enfield a red star on a white background", ""):
        ids = tok(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
        onehot = torch.nn.functional.one_hot(ids.view(-1), table.shape[0]).float()
        with torch.no_grad():
            ours = encoder(input_ids=ids, inputs_embeds=(onehot @ table)[None])[0]
            clip = model(ids).last_hidden_state
        worst = max(worst, (ours - clip).abs().max().item())
    return worst


def main() -> None:
    s = Settings.from_env()
    accept_concept(s.concept)
    sys.path.insert(0, "src")  # as attack.py:13 does, before its imports
    # the clone's own modules, only on the path at run time
    import tasks.classifier_ as classifier  # type: ignore[import-not-found]
    import tasks.utils.datasets as datasets  # type: ignore[import-not-found]
    import tasks.utils.text_encoder as text_encoder  # type: ignore[import-not-found]

    transformers5(text_encoder.CustomTextEncoder)
    worst = check_encoder(text_encoder.CustomTextEncoder, s.model)
    print(f"udatk_driver: CustomTextEncoder vs CLIPTextModel, max |diff| {worst:.2e}", flush=True)
    if worst > ENCODER_TOLERANCE:
        raise SystemExit(f"udatk_driver: the shimmed CustomTextEncoder differs by {worst:.2e}")
    judge_checks(classifier.ClassifierTask, s.concept, s.attribute)
    classifier.torch = ClassifierTorch(s.latent_size)
    model_resolution(datasets, s.image_size)
    fixed_timesteps(classifier.ClassifierTask, s.timesteps)
    sys.argv = ["src/execs/attack.py", *sys.argv[1:]]
    runpy.run_path("src/execs/attack.py", run_name="__main__")


if __name__ == "__main__":
    main()
