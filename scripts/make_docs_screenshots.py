#!/usr/bin/env python
"""
Regenerates the README's screenshots of `distill-mos report` and `distill-mos compare-systems` (docs/*.png).

Scores the bundled GenSpeech clips (tests/data/genspeech: 2 sentences x 6 conditions) with the command line tool,
writes the corpus report of those scores, and compares the six conditions as systems (one scores file with a
`system` column: the codec; items: the sentence folder). Both pages are opened in headless Debian Chromium
(Playwright; never `playwright install`) and photographed:

    python scripts/make_docs_screenshots.py            # writes docs/report.png and docs/compare-systems.png
"""

import argparse
import html
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENSPEECH = ROOT / "tests" / "data" / "genspeech" / "audio"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _run(*args: str, cwd: Path = ROOT) -> None:
    """`distill-mos ARGS` from this checkout, in `cwd` (relative paths keep the screenshots free of local folders)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "distill_mos.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"distill-mos {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def _screenshot(page_path: Path, target: Path, height: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("needs a chromium binary on PATH (apt install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1160, "height": height})
            page.goto(page_path.as_uri())
            page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(target))
        finally:
            browser.close()
    print(f"wrote {target.relative_to(ROOT)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    args.docs.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scores = folder / "scores.csv"
        _run(str(GENSPEECH.relative_to(ROOT)), "-r", "-o", str(scores), "--device", "cpu", "-q")
        report = folder / "report.html"
        _run("report", "scores.csv", "--audio-root", str(ROOT), "--group-by", "folder", "-o", "report.html", cwd=folder)
        _screenshot(report, args.docs / "report.png", height=1500)

        frame = pd.read_csv(scores)
        frame["system"] = frame["file"].map(lambda f: Path(f).stem)  # the condition: ref, opus, melp, ...
        frame["item"] = frame["file"].map(lambda f: Path(f).parent.name)  # the sentence: dir1, dir3
        by_system = folder / "by_system.csv"
        frame.to_csv(by_system, index=False)
        out = folder / "comparison"
        _run("compare-systems", str(by_system), "-o", str(out), "-q", cwd=folder)
        systems, pairs = pd.read_csv(out / "systems.csv"), pd.read_csv(out / "pairs.csv")
        page = folder / "comparison.html"
        page.write_text(
            "<!DOCTYPE html><html><head><meta charset='utf-8'><style>body{font-family:system-ui,sans-serif;margin:1.5em}"
            "table{border-collapse:collapse;font-size:.85em}td,th{padding:.2em .6em;border-bottom:1px solid #eee}</style>"
            "</head><body><h2>distill-mos compare-systems by_system.csv</h2>"
            f"<img src='{(out / 'comparison.png').as_uri()}' style='max-width:100%'>"
            f"{systems.round(3).to_html(index=False)}<br>"
            f"{pairs.head(6).round(4).to_html(index=False)}"
            f"<p>{html.escape('…and the other pairs; the same tables as CSV, JSON and Markdown in the output folder.')}</p>"
            "</body></html>"
        )
        _screenshot(page, args.docs / "compare-systems.png", height=1250)
    return 0


if __name__ == "__main__":
    sys.exit(main())
