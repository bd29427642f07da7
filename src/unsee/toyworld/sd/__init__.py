"""ToyWorld-SD: ToyWorld as a real Stable Diffusion 1.x diffusers model (issue 18).

Three resumable recipes build it, in order:

* :mod:`.vae` — ``AutoencoderKL`` on 3x32x32 renders, factor 4 (8x8x4 latents); the measured
  latent statistics are folded into its 1x1 quant convolutions so ``scaling_factor`` is SD's
  0.18215 with unit-variance scaled latents.
* :mod:`.clip` — a small ``CLIPModel`` (text tower + ViT) trained contrastively on renders and
  captions, optionally after distilling MiniLM sentence embeddings into the text tower; the
  text tower is then frozen. Tokenizer: the real CLIP BPE (:mod:`.tokenizer`).
* :mod:`.unet` — an epsilon-prediction ``UNet2DConditionModel`` on the frozen CLIP text
  states, SD v1.4's PNDM scheduler config; :func:`.unet.assemble_pipeline` writes a folder
  that plain ``StableDiffusionPipeline.from_pretrained`` loads.

The training distribution (:mod:`.data`) adds scenes with none of the nine shapes, so each
shape is rare in what the empty prompt draws, as any one concept is on SD.
"""
