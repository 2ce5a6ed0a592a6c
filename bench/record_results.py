#!/usr/bin/env python
"""
Runs a benchmark script with `--json` and commits-ready records its figures with the machine they came from.

    python bench/record_results.py benchmark_b_60s -- python bench/benchmark.py --cases b --impls original exact
    python bench/record_results.py benchmark_e_1h -- python bench/benchmark.py --cases e --impls fast

writes `bench/results/<name>.json`: the command, the machine (CPU model and flags of note from /proc/cpuinfo, logical
CPUs, memory, load average before and after, Python/torch versions, date), the script's printed output and its JSON
figures. README.md quotes these files; `tests/test_readme.py` checks that its figures match them.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CPU_FLAGS_OF_NOTE = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def machine() -> dict:
    """What the figures depend on: CPU model, flags of note, core count, memory, versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M).group(1).split()) if "flags" in cpuinfo else set()
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    import torch

    return {
        "cpu_model": model.group(1).strip() if model else platform.processor() or platform.machine(),
        "cpu_flags_of_note": sorted(f for f in CPU_FLAGS_OF_NOTE if f in flags),
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(int(total.group(1)) / 1e6, 1) if total else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="results file name (bench/results/<name>.json)")
    parser.add_argument("--note", default="", help="free text stored with the figures (e.g. 'shared machine')")
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        parser.error("give the benchmark command after -- (it must accept --json PATH)")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1 :]
    if not command:
        parser.error("give the benchmark command after --")

    with tempfile.TemporaryDirectory() as folder:
        figures_path = Path(folder) / "figures.json"
        load_before, started = os.getloadavg(), time.time()
        done = subprocess.run([*command, "--json", str(figures_path)], cwd=ROOT, capture_output=True, text=True)
        load_after, wall = os.getloadavg(), time.time() - started
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr[-5000:])
        if done.returncode != 0 or not figures_path.exists():
            print(f"record_results: the command failed (exit status {done.returncode}); nothing written", file=sys.stderr)
            return 1
        figures = json.loads(figures_path.read_text())

    record = {
        "command": " ".join(command),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(wall, 1),
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "note": args.note,
        "output": done.stdout.splitlines(),
        "figures": figures,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{args.name}.json"
    target.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
