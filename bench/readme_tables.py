#!/usr/bin/env python
"""
Prints the README's performance tables from the committed results in bench/results/, so that the README quotes
them exactly (tests/test_readme.py compares): `python bench/readme_tables.py` and paste the output.
"""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def padding_table(path: Path = RESULTS / "padding_skip_amd_epyc.json") -> str:
    """The exact-mode speed table of `bench/benchmark.py --padding`: ours against the original and against ours
    computing every frame of the padding, by process CPU time, with the floor and the deviation."""
    figures = json.loads(path.read_text())["figures"]
    rows = {(row["case"], row["impl"]): row for row in figures["rows"]}
    cases = dict.fromkeys(row["case"] for row in figures["rows"])
    lines = [
        "| case | original CPU s | ours CPU s | x original | x ours computing the padding | floor / ours | max \\|Δ MOS\\| |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        original, ours, full = rows[(case, "original")], rows[(case, "exact")], rows.get((case, "exact-full"))
        padding = f"{full['cpu'] / ours['cpu']:.2f}" if full else "(no padding)"
        lines.append(
            f"| {ours['description']} | {original['cpu']:.1f} | {ours['cpu']:.1f} | {ours['x_original_cpu']:.1f} | "
            f"{padding} | {ours['floor_over_ours']:.2f} | {ours['max_abs_vs_original']:.1e} |"
        )
    machine = figures["machine"]
    lines.append("")
    lines.append(
        f"({machine['cpu']}, {machine['logical_cpus']} CPUs, {machine['cpu_capability']}, torch {machine['torch']}, "
        f"{figures['date_utc']} UTC, load average {figures['load_average_start'].split()[0]} to "
        f"{figures['load_average_end'].split()[0]}: `bench/results/{path.name}`.)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(padding_table())
