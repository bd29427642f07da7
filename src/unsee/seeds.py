"""Seed ranges that keep training images and judged images apart.

Every image an erasure or an attack *trains on* (forget sets, anchor sets, attack training
images) is drawn with a seed at or above :data:`TRAINING_SEED_BASE`; every image the
scorecard *judges* is drawn with a seed below it. Both sides go through
:func:`check_seeds`, so a seed can never serve both roles: an erasure is never scored on
the very noise it was fitted to (SalUn's forget set once used seeds 0..99 on the same
prompt text as the scorecard's seeds 0..7).
"""

from __future__ import annotations

from collections.abc import Iterable

from unsee.errors import UnseeError

#: First training seed (2**40); evaluation seeds are 0 .. TRAINING_SEED_BASE - 1, room for
#: every 32-bit ``evaluation_seed`` of the I2P / COCO prompt files plus ``--num-images``.
TRAINING_SEED_BASE = 1 << 40
#: Largest seed any generator here accepts (``torch.Generator.manual_seed`` takes 64 bits).
MAX_SEED = (1 << 63) - 1


def check_seeds(seeds: Iterable[int], *, training: bool) -> None:
    """Raise :class:`UnseeError` unless every seed lies in its role's range: training seeds
    in ``[TRAINING_SEED_BASE, MAX_SEED]``, evaluation seeds in ``[0, TRAINING_SEED_BASE)``.
    The one check the scorecard and the image-set builders share."""
    lo, hi = (TRAINING_SEED_BASE, MAX_SEED) if training else (0, TRAINING_SEED_BASE - 1)
    bad = sorted({int(s) for s in seeds if not lo <= int(s) <= hi})
    if bad:
        role = "training image" if training else "evaluation image"
        shown = ", ".join(map(str, bad[:3])) + (" ..." if len(bad) > 3 else "")
        raise UnseeError(
            f"{role} seed(s) {shown} outside the {role} range [{lo}, {hi}]: "
            "training and evaluation seeds must never meet"
        )


def training_seeds(first: int, n: int) -> list[int]:
    """``n`` consecutive training seeds, ``TRAINING_SEED_BASE + first + i`` for i < n
    (``first`` >= 0: a method's ``--seed`` plus its own offset), checked."""
    if first < 0:
        raise UnseeError(f"seed offsets must be non-negative (got {first})")
    seeds = [TRAINING_SEED_BASE + first + i for i in range(n)]
    check_seeds(seeds, training=True)
    return seeds
