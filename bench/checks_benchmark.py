#!/usr/bin/env python
"""
Input checks benchmark (issue 19): what the checks cost per audio second, and what this branch costs the default
command line run (checks off), by CPU time, side by side in one run (the machine is shared; wall time is not).

1. Each check (Silero VAD speech share, BS.1770 loudness, clipping, bandwidth) and the model's own scoring, on clips
   of mixed length and sampling rate (bench/cli_benchmark.py's folder): CPU seconds per audio second, and the
   checks' cost as a share of scoring's.
2. `distill-mos FOLDER` (checks off) of this tree against the commit before this work (`--base`, extracted with
   `git archive`), then `distill-mos FOLDER --checks`: child CPU time (user + system, from wait4), runs
   interleaved, median of `--repeats`; the ratio must stay under 1.10 with the checks off.

    python bench/checks_benchmark.py                       # 10 clips, 3 repeats, base 0513550
    python bench/checks_benchmark.py --clips 20 --repeats 5 --out bench/results/checks_amd_epyc.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from benchmark import cpu_report  # noqa: E402
from cli_benchmark import make_folder  # noqa: E402

BASE = "0513550"  # main before this branch's provenance/checks/calibration wiring


def per_audio_second(folder: Path) -> dict:
    """CPU seconds per audio second of each check and of scoring (float32, exact), over the folder's clips."""
    import numpy as np

    from distill_mos import checks
    from distill_mos.audio import load_audio
    from distill_mos.scorer import DistillMOSScorer

    scorer = DistillMOSScorer.from_pretrained(str(ROOT), device="cpu")
    decoded = [load_audio(path) for path in sorted(folder.glob("*.wav"))]
    prepared = [scorer.prepare(d.waveform, d.sampling_rate) for d in decoded]
    audio_seconds = sum(d.duration for d in decoded)
    checks.speech_share(np.zeros(16000, np.float32))  # load the VAD outside the timing

    def cpu(function) -> float:
        start = time.process_time()
        for d, p in zip(decoded, prepared):
            function(d, p)
        return (time.process_time() - start) / audio_seconds

    figures = {
        "speech_share (Silero VAD)": cpu(lambda d, p: checks.speech_share(p)),
        "loudness (BS.1770)": cpu(lambda d, p: checks.loudness_lufs(d.waveform, d.sampling_rate)),
        "clipping": cpu(lambda d, p: checks.clipped_share(d.waveform)),
        "bandwidth (Welch)": cpu(lambda d, p: checks.bandwidth_hz(d.waveform, d.sampling_rate)),
        "all checks (check_audio)": cpu(lambda d, p: checks.check_audio(d.waveform, d.sampling_rate, p)),
        "scoring (float32, exact)": cpu(lambda d, p: scorer.score_prepared([p])),
    }
    return {"audio_seconds": round(audio_seconds, 1), "cpu_s_per_audio_s": {k: round(v, 5) for k, v in figures.items()},
            "checks_share_of_scoring": round(figures["all checks (check_audio)"] / figures["scoring (float32, exact)"], 4)}


def child_cpu(command: list[str], env: dict) -> float:
    """User + system CPU seconds of one command (and its threads), from wait4."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    error = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed: {error[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def cli_overhead(folder: Path, base: str, repeats: int) -> dict:
    """Median child CPU of `distill-mos FOLDER` for the base tree, this tree, and this tree with --checks."""
    with tempfile.TemporaryDirectory(prefix="checks-bench-base-") as tmp:
        archive = subprocess.run(["git", "archive", base], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISTILL_MOS_MODEL": str(ROOT)}  # the same weights for both
        command = [sys.executable, "-m", "distill_mos.cli", str(folder), "--device", "cpu", "-q", "--no-progress"]
        times = {"base (checks code absent)": [], "this tree, checks off": [], "this tree, --checks": []}
        for _ in range(repeats):  # interleaved, so that load changes hit every variant alike
            times["base (checks code absent)"].append(child_cpu(command, {**env, "PYTHONPATH": tmp}))
            times["this tree, checks off"].append(child_cpu(command, {**env, "PYTHONPATH": str(ROOT)}))
            times["this tree, --checks"].append(child_cpu([*command, "--checks"], {**env, "PYTHONPATH": str(ROOT)}))
    median = {name: statistics.median(values) for name, values in times.items()}
    base_cpu = median["base (checks code absent)"]
    return {
        "base": base,
        "repeats": repeats,
        "cpu_s": {name: [round(v, 2) for v in values] for name, values in times.items()},
        "median_cpu_s": {name: round(v, 2) for name, v in median.items()},
        "ratio_checks_off_vs_base": round(median["this tree, checks off"] / base_cpu, 4),
        "ratio_checks_on_vs_base": round(median["this tree, --checks"] / base_cpu, 4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default=BASE, help=f"commit to compare the default run with (default {BASE})")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="checks-bench-") as tmp:
        folder = Path(tmp)
        make_folder(folder, args.clips)
        load = os.getloadavg()
        results = {"machine": cpu_report(), "clips": args.clips, "load_before": [round(v, 2) for v in load]}
        results["per_audio_second"] = per_audio_second(folder)
        results["cli"] = cli_overhead(folder, args.base, args.repeats)
        results["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    print(f"CPU: {results['machine']['cpu']}; checks off / base {results['cli']['ratio_checks_off_vs_base']:.3f}, "
          f"--checks / base {results['cli']['ratio_checks_on_vs_base']:.3f} (CPU time)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
