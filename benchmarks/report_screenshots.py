"""Screenshots of run reports in headless Chromium: rebuild ``report.html`` of each run directory (``mednas report``)
and save a full-page PNG with the trailing blank space trimmed.

    python benchmarks/report_screenshots.py RUN_DIR:report_default.png RUN_DIR2:report_segmentation.png \
        [--out benchmarks/results] [--chromium /usr/bin/chromium] [--width 1200]

Chromium runs with ``--headless --no-sandbox`` on a ``file://`` URL: nothing listens on any port.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def screenshot(html: Path, out: Path, chromium: str, width: int = 1200, height: int = 9000) -> tuple[int, int]:
    """Full-page PNG of ``html`` at ``out`` (the window is ``height`` px tall; blank rows below the page are cut)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={width},{height}", f"--screenshot={raw}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=300)
        im = Image.open(raw).convert("RGB")
        ink = np.flatnonzero((np.asarray(im) < 250).any(axis=(1, 2)))
        bottom = min(im.height, int(ink[-1]) + 30) if len(ink) else im.height
        if bottom >= im.height:
            print(f"warning: {html} may be taller than {height} px; raise --height", file=sys.stderr)
        im = im.crop((0, 0, im.width, bottom))
        out.parent.mkdir(parents=True, exist_ok=True)
        im.save(out, optimize=True)
        return im.size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR:NAME.png")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=9000)
    args = p.parse_args(argv)
    from mednas_nni.cli import main as mednas

    for item in args.runs:
        run_dir, _, name = item.rpartition(":")
        if mednas(["report", run_dir]) != 0:
            return 1
        size = screenshot(Path(run_dir) / "report.html", args.out / name, args.chromium, args.width, args.height)
        print(f"{args.out / name}: {size[0]}x{size[1]} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
