"""
Corpus-scale throughput (issue 10, point 5): the same N short clips (1..10 s, mixed sampling rates) scored

  (a) by the command line tool in one process      distill-mos DIR -o a.csv
  (b) by add_mos_column with num_proc=2            Dataset.map in 2 worker processes, one model each
  (c) by the command line tool on Ray, 2 actors     distill-mos DIR --ray --ray-actors 2 (a local Ray instance)
  (d) the same with 1 actor                         (per-actor rate, for the scaling paragraph in bench/README.md)

Each case runs in a fresh process tree; wall time includes start-up and model loading (Ray: starting the local
instance and its actors too). Peak memory is the largest sum of the resident set sizes of the case's whole process
tree (driver, workers, Ray's daemons and actors), sampled every 0.2 s from /proc. Scores are compared with (a).

    python bench/scale_benchmark.py                       # 1000 clips, cases a b c
    python bench/scale_benchmark.py --clips 200 --cases abcd

No assertions: it prints figures (and the machine, load average and versions they were taken on).
"""

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATES = [8000, 16000, 22050, 44100, 48000]
CONSOLE = Path(sys.executable).parent / "distill-mos"


def make_clips(folder: Path, count: int, seed: int = 0) -> float:
    """`count` WAV clips of 1..10 s at mixed rates, cut from the bundled 16 kHz GenSpeech speech; returns seconds."""
    import soundfile
    from scipy.signal import resample_poly

    sources = sorted((ROOT / "tests/data/genspeech/audio").glob("**/*.wav"))
    speech = np.concatenate([soundfile.read(p, dtype="float32")[0] for p in sources])
    rng = np.random.default_rng(seed)
    total = 0.0
    for index in range(count):
        seconds = rng.uniform(1.0, 10.0)
        start = rng.integers(0, len(speech) - int(10 * 16000))
        clip = speech[start:start + int(seconds * 16000)]
        rate = RATES[index % len(RATES)]
        if rate != 16000:
            g = np.gcd(rate, 16000)
            clip = resample_poly(clip, rate // g, 16000 // g).astype(np.float32)
        soundfile.write(folder / f"clip{index:05d}.wav", clip, rate, subtype="PCM_16")
        total += len(clip) / rate
    return total


def _tree_rss_bytes(root: int) -> int:
    """Sum of VmRSS over `root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def run_case(command: list[str], env: dict) -> tuple[float, int, str]:
    """-> (wall seconds, peak RSS of the process tree in bytes, stderr tail)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss_bytes(process.pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    if process.returncode not in (0, 1):
        raise RuntimeError(f"{command[:3]} failed ({process.returncode}): {err[-3000:]}")
    return wall, peak, err[-500:]


DATASET_SCRIPT = """
import csv, sys, datasets
from distill_mos import add_mos_column
folder, out = sys.argv[1], sys.argv[2]
files = sorted(str(p) for p in __import__("pathlib").Path(folder).glob("*.wav"))
ds = datasets.Dataset.from_dict({"audio": files, "file": files}).cast_column("audio", datasets.Audio())
scored = add_mos_column(ds, batch_size=8, num_proc=2, device="cpu")
with open(out, "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["file", "mos", "error"])
    writer.writerows(zip(scored["file"], scored["mos"], scored["mos_error"]))
"""


def read_scores(path: Path) -> dict[str, float | None]:
    with open(path, newline="") as handle:
        return {row["file"]: float(row["mos"]) if row["mos"] else None for row in csv.DictReader(handle)}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    import importlib.metadata as md

    versions = ", ".join(f"{name} {md.version(name)}" for name in ("torch", "datasets", "ray") if _installed(name))
    return (f"{cpu}, {os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB, "
            f"Python {platform.python_version()}, {versions}")


def _installed(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--cases", default="abc", help="any of a, b, c, d (see above)")
    parser.add_argument("--folder", type=Path, default=None, help="reuse (or keep) the clips here")
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "DISTILL_MOS_MODEL": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="distill-mos-scale-") as scratch:
        scratch = Path(scratch)
        folder = args.folder or scratch / "clips"
        folder.mkdir(parents=True, exist_ok=True)
        if len(list(folder.glob("*.wav"))) != args.clips:
            audio_seconds = make_clips(folder, args.clips)
        else:
            import soundfile

            audio_seconds = sum(soundfile.info(str(p)).duration for p in folder.glob("*.wav"))
        print(f"machine: {machine()}")
        print(f"{args.clips} clips, {audio_seconds / 60:.1f} min of audio (1..10 s; {', '.join(map(str, RATES))} Hz)")
        cli = [str(CONSOLE)] if CONSOLE.exists() else [sys.executable, "-m", "distill_mos.cli"]
        cases = {
            "a": ("CLI, one process", [*cli, str(folder), "-o", str(scratch / "a.csv"), "--no-progress", "-q"], "a.csv"),
            "b": ("add_mos_column, num_proc=2", [sys.executable, "-c", DATASET_SCRIPT, str(folder), str(scratch / "b.csv")], "b.csv"),
            "c": ("CLI --ray, 2 actors", [*cli, str(folder), "-o", str(scratch / "c.csv"), "--ray", "--ray-actors", "2",
                                          "--no-progress", "-q"], "c.csv"),
            "d": ("CLI --ray, 1 actor", [*cli, str(folder), "-o", str(scratch / "d.csv"), "--ray", "--ray-actors", "1",
                                         "--no-progress", "-q"], "d.csv"),
        }
        results = {}
        print("\n| case | wall s | clips/s | audio s / s | peak MB (process tree) | vs (a) | max abs dMOS vs (a) | load avg before/after |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for key in args.cases:
            name, command, output = cases[key]
            before = os.getloadavg()[0]
            wall, peak, _ = run_case(command, env)
            after = os.getloadavg()[0]
            scores = read_scores(scratch / output)
            results[key] = (wall, scores)
            if "a" in results and key != "a":
                reference = results["a"][1]
                deltas = [abs(scores[f] - reference[f]) for f in reference if reference[f] is not None]
                delta, ratio = f"{max(deltas):.1e}", f"{results['a'][0] / wall:.2f}x"
            else:
                delta, ratio = "", ""
            print(f"| ({key}) {name} | {wall:.1f} | {args.clips / wall:.2f} | {audio_seconds / wall:.1f} | "
                  f"{peak / 2**20:.0f} | {ratio} | {delta} | {before:.1f} / {after:.1f} |", flush=True)
        if "a" in results and "c" in results:
            print(f"\nRay overhead against (a): {results['c'][0] - results['a'][0]:+.1f} s "
                  f"({results['c'][0] / results['a'][0] - 1:+.0%} wall time) with 2 actors on this machine")
        if "c" in results and "d" in results:
            per_actor = args.clips / results["d"][0]
            print(f"per-actor rate (1 actor): {per_actor:.2f} clips/s; 2 actors: {args.clips / results['c'][0]:.2f} "
                  f"clips/s ({results['d'][0] / results['c'][0]:.2f}x)")


if __name__ == "__main__":
    main()
