#!/usr/bin/env python
"""
How long `distill-mos report` takes on a large corpus: N synthetic rows (default 1,000,000) in the CLI's CSV and
JSON Lines formats and as Parquet, over 1,000 folders, 1% errors and 1% warnings, grouped by folder. Each format's
report is written through the command's own `main` (read, figures, HTML); wall and CPU time are printed side by side.
The goal: under a minute for a million rows.

    python bench/report_benchmark.py [--rows 1000000] [--json figures.json]
    python bench/record_results.py report_<machine> -- python bench/report_benchmark.py
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_mos.report_cli import main as report_main  # noqa: E402

GOAL_S = 60.0


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    folder = rng.integers(0, 1000, rows)
    frame = pd.DataFrame({
        "file": [f"/corpus/source_{f:04d}/clip_{i:07d}.wav" for i, f in enumerate(folder)],
        "mos": np.round(np.clip(rng.normal(3.2 + (folder % 7) * 0.1, 0.6), 1.0, 5.0), 6),
        "duration_s": np.round(rng.uniform(1.0, 20.0, rows), 4),
        "sampling_rate": 16000,
        "channels": 1,
        "error": None,
        "warning": None,
    })
    failed = rng.random(rows) < 0.01
    frame.loc[failed, ["mos", "duration_s"]] = np.nan
    frame.loc[failed, "error"] = "not a readable audio file (Error opening a file: Format not recognised.)"
    warned = ~failed & (rng.random(rows) < 0.01)
    frame.loc[warned, "warning"] = "audio is very short (0.50 s); the model scores 7.68 s windows, so this score is less reliable"
    return frame


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", nargs="+", default=["csv", "jsonl", "parquet"], choices=["csv", "jsonl", "parquet"])
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    figures = {"rows": args.rows, "goal_s": GOAL_S, "formats": {}}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        frame = synthetic(args.rows)
        print(f"{args.rows:,} synthetic rows, 1,000 folders, {int(frame['error'].notna().sum()):,} errors")
        print(f"{'format':8} {'file MB':>8} {'wall s':>8} {'CPU s':>8}  under {GOAL_S:g} s")
        for fmt in args.formats:
            scores = folder / f"scores.{fmt}"
            if fmt == "csv":
                frame.to_csv(scores, index=False)
            elif fmt == "jsonl":
                frame.to_json(scores, orient="records", lines=True)
            else:
                frame.to_parquet(scores, index=False)
            html = folder / f"report_{fmt}.html"
            wall, cpu = time.perf_counter(), time.process_time()
            status = report_main([str(scores), "--group-by", "folder", "-o", str(html)])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if status != 0:
                print(f"report failed on {fmt} (exit status {status})", file=sys.stderr)
                return 1
            size = scores.stat().st_size / 1e6
            print(f"{fmt:8} {size:8.1f} {wall:8.1f} {cpu:8.1f}  {'yes' if wall < GOAL_S else 'NO'}")
            figures["formats"][fmt] = {
                "scores_mb": round(size, 1), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                "html_kb": round(html.stat().st_size / 1e3, 1), "under_goal": wall < GOAL_S,
            }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
