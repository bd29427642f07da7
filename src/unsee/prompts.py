"""Prompt files: a text file (one prompt a line) or a CSV with a ``prompt`` column and an
optional ``evaluation_seed`` (the format of I2P, COCO-30k, ImageNet and art prompt sets)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from unsee.errors import UnseeError


@dataclass(frozen=True)
class PromptRow:
    """One prompt; ``seed`` is the file's ``evaluation_seed`` when it has one."""

    prompt: str
    seed: int | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def read_prompts(path: Path | str, limit: int | None = None) -> list[PromptRow]:
    path = Path(path)
    if not path.is_file():
        raise UnseeError(f"prompt file {path} does not exist")
    try:
        rows = _read_rows(path, limit)
    except UnicodeDecodeError as exc:
        raise UnseeError(
            f"prompt file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    except csv.Error as exc:
        raise UnseeError(f"prompt file {path} is not a readable CSV ({exc})") from None
    if not rows:
        raise UnseeError(f"prompt file {path} contains no prompts")
    return rows


def _seed(text: str, path: Path, line_no: int) -> int:
    """An ``evaluation_seed`` cell: a whole number in [0, 2^63) ("42" or "42.0", as the
    field's CSVs write it)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value == int(value) and 0 <= value < 2**63):
        raise UnseeError(
            f"{path}, line {line_no}: evaluation_seed {text!r} is not a non-negative whole number"
        )
    return int(value)


def _read_rows(path: Path, limit: int | None) -> list[PromptRow]:
    rows: list[PromptRow] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            if "prompt" not in fields:
                raise UnseeError(f"{path} has no 'prompt' column (columns: {', '.join(fields)})")
            for line_no, rec in enumerate(reader, start=2):
                rec = {(k or "").strip(): (v or "") for k, v in rec.items()}
                text = rec["prompt"].strip()
                if not text:
                    continue
                seed_s = rec.get("evaluation_seed", "").strip()
                seed = _seed(seed_s, path, line_no) if seed_s else None
                rows.append(PromptRow(text, seed, rec))
                if limit is not None and len(rows) >= limit:
                    break
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(PromptRow(line.strip()))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def expand_seeds(rows: list[PromptRow], num_images: int, seed: int) -> tuple[list[str], list[int]]:
    """Image k of a row gets seed ``(row.seed if given else seed) + k``."""
    prompts, seeds = [], []
    for r in rows:
        base = r.seed if r.seed is not None else seed
        for k in range(num_images):
            prompts.append(r.prompt)
            seeds.append(base + k)
    return prompts, seeds
