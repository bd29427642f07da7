"""Training the judge's presence head (``shape`` / ``none``) on ToyWorld-SD's scenes.

The head reads the judge's frozen features (:mod:`unsee.toyworld.judge`), so the four
attribute heads stay exactly as they were; it needs ToyWorld-SD's scenes without a shape
(:mod:`.data`), which is why it is trained here, beside the other ToyWorld-SD recipes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from unsee.io import atomic_write, read_json_object, write_json
from unsee.progress import progress_bar
from unsee.toyworld.judge import (
    PRESENCE,
    PRESENCE_FILE,
    WEIGHTS_DIR,
    load_judge,
    perturb,
    predict,
    presence_head,
    to_tensor,
)
from unsee.toyworld.sd.data import SCENE_SHAPES, is_shape, render_scenes


def train_presence(
    judge_dir: Path = WEIGHTS_DIR, n_train: int = 20_000, epochs: int = 10, seed: int = 1
) -> dict[str, float]:
    """Train the presence head of the judge in ``judge_dir`` on its frozen features and
    write it there (``presence.safetensors``; accuracy added to ``judge.json``).

    Training scenes: ToyWorld-SD's mix (:func:`unsee.toyworld.sd.data.render_scenes`, half
    without a shape) of ``seed``, with the attribute heads' pixel noise and blur. Returns
    the share judged "shape" on 2,000 fresh scenes of ``seed + 1000``, per scene kind (the
    nine shapes, then plain, line, ring), and the overall accuracy."""
    judge = load_judge(judge_dir, presence=False)
    imgs, codes = render_scenes(n_train, seed, p_none=0.5)
    x_all = to_tensor(imgs)
    y_all = torch.tensor([0 if is_shape(c) else 1 for c in codes[:, 0]])
    torch.manual_seed(seed)
    head = presence_head()
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    batch = 256
    with progress_bar(epochs * (n_train // batch), "train the judge's presence head") as bar:
        for _ in range(epochs):
            perm = torch.randperm(n_train, generator=g)
            for s in range(n_train // batch):
                idx = perm[s * batch : (s + 1) * batch]
                with torch.no_grad():
                    f = judge.features(perturb(x_all[idx], g))
                loss = F.cross_entropy(head(f), y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.advance(loss=loss.item())
    judge.presence = head.eval()
    test_imgs, test_codes = render_scenes(2000, seed + 1000, p_none=0.5)
    said = np.array([p["label"] for p in predict(judge, test_imgs)["presence"]])
    kinds = test_codes[:, 0]
    acc: dict[str, float] = {
        f"{SCENE_SHAPES[k]} -> shape": float(np.mean(said[kinds == k] == "shape"))
        for k in range(len(SCENE_SHAPES))
        if (kinds == k).any()
    }
    truth = np.where([is_shape(c) for c in kinds], "shape", "none")
    acc["accuracy"] = float(np.mean(said == truth))
    atomic_write(Path(judge_dir) / PRESENCE_FILE, lambda p: save_file(head.state_dict(), str(p)))
    record = read_json_object(Path(judge_dir) / "judge.json", "the judge's record")
    record["presence"] = {
        "labels": list(PRESENCE),
        "train_scenes": n_train,
        "epochs": epochs,
        "seed": seed,
        "p_none": 0.5,
        "share_judged_shape_fresh_scenes": acc,
        "test_scenes": 2000,
    }
    write_json(Path(judge_dir) / "judge.json", record)
    return acc
