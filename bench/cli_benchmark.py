#!/usr/bin/env python
"""
CLI benchmark: one folder of 100 speech clips of mixed length (1..20 s) and mixed sampling rates (8, 16, 22.05, 44.1,
48 kHz; 16-bit WAV, which the original CLI requires) scored by `distill-mos` and by the original `distillmos` CLI in the
same run. Prints wall time (process start to exit, model loading included), peak memory of each CLI process
(ru_maxrss from wait4), throughput in audio seconds per wall second, the ratio ours / original, and the largest
|delta MOS| between their scores.

    python bench/cli_benchmark.py                   # 100 clips
    python bench/cli_benchmark.py --clips 20 --backends torch onnx --keep /tmp/folder
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from benchmark import speech_source  # noqa: E402

RATES = (8000, 16000, 22050, 44100, 48000)


def make_folder(folder: Path, clips: int, seed: int = 0) -> float:
    """Writes the clips; returns their total duration in seconds."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    rng = np.random.default_rng(seed)
    source = speech_source()
    total = 0.0
    for index in range(clips):
        seconds, rate = float(rng.uniform(1.0, 20.0)), RATES[index % len(RATES)]
        offset = int(rng.integers(len(source)))
        audio = np.resize(np.roll(source, -offset), int(seconds * 16000))
        if rate != 16000:
            audio = AF.resample(torch.from_numpy(audio), 16000, rate).numpy()
        audio = np.clip(audio, -1.0, 1.0)
        sf.write(folder / f"clip{index:03d}_{rate}.wav", audio, rate, subtype="PCM_16")
        total += len(audio) / rate
    return total


def run(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit status) of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"{command[0]} exited with {code}:\n{stderr[-2000:]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, code


def read_scores(path: Path, file_column: str, score_column: str) -> dict[str, float]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        return {Path(row[file_column].strip()).name: float(row[score_column]) for row in reader}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--backends", nargs="+", default=["torch"], choices=["torch", "onnx"])
    parser.add_argument("--keep", type=Path, help="write the folder here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)

    bin_dir = Path(sys.executable).parent
    ours_cli = shutil.which("distill-mos", path=str(bin_dir)) or shutil.which("distill-mos")
    original_cli = shutil.which("distillmos", path=str(bin_dir)) or shutil.which("distillmos")
    if not ours_cli or not original_cli:
        print("needs both `distill-mos` (pip install -e .) and `distillmos` (pip install distillmos==0.9.1)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="distill-mos-cli-bench-"))
    folder = args.keep or work / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        audio_seconds = make_folder(folder, args.clips)
        load = os.getloadavg()
        print(f"{args.clips} clips, {audio_seconds / 60:.1f} min of audio, rates {', '.join(map(str, RATES))} Hz; "
              f"{os.cpu_count()} logical CPUs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        original_csv = work / "original.csv"
        wall, peak, code = run([original_cli, str(folder), "-o", str(original_csv)])
        if code != 0:
            return 1
        original = read_scores(original_csv, "filename", "DistillMOS")
        rows = [("distillmos (original)", wall, peak, "", "")]
        for backend in args.backends:
            ours_csv = work / f"ours_{backend}.csv"
            command = [ours_cli, str(folder), "-o", str(ours_csv), "-q", "--device", "cpu", "--backend", backend]
            if backend == "onnx":  # export outside the timing (first use only), into the work folder
                command += ["--onnx-path", str(work / "distillmos.onnx")]
                subprocess.run([*command[:1], str(next(folder.iterdir())), "-o", str(work / "warm.csv"), "-q",
                                "--device", "cpu", "--backend", "onnx", "--onnx-path", str(work / "distillmos.onnx")],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall_ours, peak_ours, code = run(command)
            if code != 0:
                return 1
            ours = read_scores(ours_csv, "file", "mos")
            if set(ours) != set(original):
                print(f"file sets differ: {sorted(set(ours) ^ set(original))[:5]}", file=sys.stderr)
                return 1
            delta = max(abs(ours[name] - original[name]) for name in original)
            rows.append((f"distill-mos --backend {backend}", wall_ours, peak_ours, f"{wall / wall_ours:.2f}",
                         f"{delta:.1e}"))
        print(f"\n{'CLI':<28} {'wall s':>8} {'audio s/s':>9} {'peak MB':>8} {'x orig':>7} {'max|dMOS|':>9}")
        for name, wall_s, peak_mb, ratio, delta in rows:
            print(f"{name:<28} {wall_s:>8.1f} {audio_seconds / wall_s:>9.1f} {peak_mb:>8.0f} {ratio:>7} {delta:>9}")
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
