"""Check that a ``report.html`` is self-contained and renders: screenshot it in headless
Chromium (Debian: ``apt-get install -y chromium``) and look at the PNG.

    python bench/check_report.py out/eval/report.html /tmp/report.png [--height 4000]

Exit codes: 0 rendered, 1 not self-contained or blank screenshot, 3 no chromium found.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def external_references(html: str) -> list[str]:
    """Every URL the page would fetch (src/href/url() that is not an inline data: URI)."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    refs += re.findall(r"""url\(\s*["']?([^"')]+)""", html)
    return [r for r in refs if not r.startswith(("data:", "#"))]


def screenshot(report: Path, png: Path, width: int = 1400, height: int = 4000) -> None:
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                report.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=4000)
    args = ap.parse_args()
    refs = external_references(args.report.read_text(encoding="utf-8"))
    if refs:
        print(f"not self-contained: {refs[:5]}", file=sys.stderr)
        return 1
    try:
        screenshot(args.report, args.png, args.width, args.height)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 3
    pixels = np.asarray(Image.open(args.png).convert("L"), dtype=np.float32)
    if pixels.std() < 5:
        print(f"{args.png} looks blank (pixel std {pixels.std():.1f})", file=sys.stderr)
        return 1
    print(f"rendered {args.report} -> {args.png} ({pixels.shape[1]}x{pixels.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
