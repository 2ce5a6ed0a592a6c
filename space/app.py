"""
Distill-MOS Gradio Space: score the speech quality (MOS 1..5) of uploaded or recorded audio: one clip (with its
per-window curve), several files (a table and a CSV), two clips compared, or the microphone live.
API: /predict, /compare, /score_many.

Run from the repository checkout:   pip install -e ".[space]" && python space/app.py     (http://127.0.0.1:7860)
Import without launching:          from page import build_demo; demo = build_demo(scorer)   (space/ on sys.path)
Build the Space repository:         python space/build_space.py out/space   (layout: space/README.md)

This file only builds the page and launches it. The Space's other modules, each with one job:

    settings.py    DISTILL_MOS_* settings (limits, model, device, precision: listed there) and loading the model
    scoring.py     the library's decode and scoring path behind the limits, in two lanes (short / long requests)
    formatting.py  results as Markdown, JSON, table rows and CSV
    plots.py       the per-window plot (SVG)
    handlers.py    the functions behind the buttons and the API
    page.py        the layout, the API endpoints, the queue and the launch settings
    live.py        the Live tab: the microphone scored as it streams
    stream_chunks.py  every chunk the microphone streams, kept in recording order (Gradio keeps only the newest)

Decoding, resampling and scoring go through the `distill_mos` library (`DistillMOSScorer.score_items`, the one path
of the `distill-mos` command line tool, `add_mos_column` and Ray).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

SPACE_DIR = Path(__file__).resolve().parent
INSTALL_HINT = 'The Space needs gradio: pip install -e ".[space]" (from the repository checkout), then python space/app.py'

# The Space's own modules sit next to this file (on sys.path when run as a script, not when loaded by path); from the
# checkout, the library (distill_mos/ and the model's *_distillmos.py modules) sits one folder up.
if str(SPACE_DIR) not in sys.path:
    sys.path.insert(0, str(SPACE_DIR))
if (SPACE_DIR.parent / "distill_mos" / "__init__.py").is_file() and str(SPACE_DIR.parent) not in sys.path:
    sys.path.insert(1, str(SPACE_DIR.parent))

try:
    import gradio  # noqa: F401
except ModuleNotFoundError as _error:
    if _error.name != "gradio":
        raise
    if __name__ == "__main__":
        raise SystemExit(INSTALL_HINT) from None  # one line, no traceback
    raise ModuleNotFoundError(INSTALL_HINT, name="gradio") from None

from page import build_demo, launch_kwargs  # noqa: E402
from settings import Limits, load_scorer  # noqa: E402, F401 - load_scorer: the model the Space loads, for tooling

logger = logging.getLogger("distill_mos.space")


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    limits = Limits.from_env()
    try:  # requests run side by side: give each its share of the cores rather than oversubscribing them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // limits.concurrency))
    except Exception:  # noqa: BLE001
        pass
    demo = build_demo(limits=limits)
    demo.launch(**launch_kwargs(limits))


if __name__ == "__main__":
    main()
