"""The real CLIP tokenizer, built offline from the BPE file that PyPI CLIP packages ship.

OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` ships inside the ``open-clip-torch`` wheel
(``open_clip/``) and the ``clip-anytorch`` wheel (``clip/``). :func:`build_clip_tokenizer`
turns it into ``vocab.json`` / ``merges.txt`` exactly as OpenAI's ``simple_tokenizer`` builds
its vocabulary (256 byte symbols, the same with ``</w>``, 48 894 merges, then
``<|startoftext|>`` and ``<|endoftext|>``: 49 408 tokens), and saves a ``CLIPTokenizer``
folder with ``model_max_length`` 77 (loaded from a bare folder transformers would report
1e30, and SD pipelines would pad wrongly).

The file is located through the installed distribution's metadata, never by importing the
package: open-clip-torch imports torchvision, which does not work beside the CPU torch wheel,
so install it without dependencies: ``pip install --no-deps open-clip-torch==3.3.0``.
``$UNSEE_CLIP_BPE`` may name the file instead. Its SHA-256 is checked.

transformers 5 pitfall: ``CLIPTokenizer(vocab_file=..., merges_file=...)`` silently builds a
2-token vocabulary; ``from_pretrained(folder)`` is the constructor that works.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path

from unsee.errors import UnseeError

BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
_CANDIDATES = (
    ("open_clip_torch", "open_clip/bpe_simple_vocab_16e6.txt.gz"),
    ("clip-anytorch", "clip/bpe_simple_vocab_16e6.txt.gz"),
)
VOCAB_SIZE = 49408
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def find_bpe_file() -> Path:
    """Path of CLIP's ``bpe_simple_vocab_16e6.txt.gz`` ($UNSEE_CLIP_BPE, else an installed
    open-clip-torch or clip-anytorch distribution), checked against its SHA-256."""
    import importlib.metadata as md

    env = os.environ.get("UNSEE_CLIP_BPE")
    found: Path | None = Path(env) if env else None
    if found is None:
        for dist, rel in _CANDIDATES:
            try:
                p = Path(str(md.distribution(dist).locate_file(rel)))
            except md.PackageNotFoundError:
                continue
            if p.exists():
                found = p
                break
    if found is None or not found.exists():
        raise UnseeError(
            "CLIP's BPE file was not found: install it with "
            "`pip install --no-deps open-clip-torch==3.3.0` (no torchvision) "
            "or set UNSEE_CLIP_BPE to bpe_simple_vocab_16e6.txt.gz"
        )
    digest = hashlib.sha256(found.read_bytes()).hexdigest()
    if digest != BPE_SHA256:
        raise UnseeError(f"{found} is not CLIP's BPE file (sha256 {digest[:12]}...)")
    return found


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte -> printable unicode map (GPT-2 / CLIP)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    """CLIP's token -> id map (49 408 entries) and merge list, as ``simple_tokenizer``."""
    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def build_clip_tokenizer(out_dir: Path, bpe_path: Path | None = None) -> Path:
    """Write a ``CLIPTokenizer`` folder (vocab.json, merges.txt, tokenizer_config.json with
    ``model_max_length`` 77, special tokens as SD v1.x's) to ``out_dir``; returns it."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges(bpe_path or find_bpe_file())
    if len(vocab) != VOCAB_SIZE:
        raise UnseeError(f"CLIP vocabulary has {len(vocab)} tokens, expected {VOCAB_SIZE}")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (t / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        (t / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "model_max_length": MAX_LENGTH,
                    "bos_token": BOS,
                    "eos_token": EOS,
                    "unk_token": EOS,
                    "pad_token": EOS,
                    "do_lower_case": True,
                    "tokenizer_class": "CLIPTokenizer",
                }
            )
        )
        tok = CLIPTokenizer.from_pretrained(t, local_files_only=True)
        tok.model_max_length = MAX_LENGTH
        tok.save_pretrained(out_dir)
        add_slow_files(out_dir, t)
    return out_dir


def add_slow_files(tokenizer_dir: Path, source_dir: Path) -> None:
    """Put ``vocab.json`` / ``merges.txt`` beside the ``tokenizer.json`` that transformers 5
    saves (older transformers' slow ``CLIPTokenizer`` needs them), and pin
    ``model_max_length`` 77 in ``tokenizer_config.json``, dropping load-time-only keys."""
    import shutil

    tokenizer_dir = Path(tokenizer_dir)
    for name in ("vocab.json", "merges.txt"):
        if Path(source_dir, name).resolve() != Path(tokenizer_dir, name).resolve():
            shutil.copyfile(Path(source_dir) / name, tokenizer_dir / name)
    cfg_path = tokenizer_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_max_length"] = MAX_LENGTH
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def load_clip_tokenizer(path: Path):
    """``CLIPTokenizer.from_pretrained(path)`` offline, checked to be the real vocabulary."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    if len(tok) != VOCAB_SIZE or tok.model_max_length != MAX_LENGTH:
        raise UnseeError(f"{path}: not a 49,408-token CLIP tokenizer with 77 positions")
    return tok
