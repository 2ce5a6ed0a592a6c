#!/usr/bin/env python
"""
Live scoring cost (issue 18 §5): per-update CPU time and latency of `distill_mos.stream.StreamScorer`, and how many
live streams at a 1 s hop this machine sustains in real time, in float32 and bfloat16.

    python bench/stream_benchmark.py --seconds 30                     # prints a table
    python bench/stream_benchmark.py --seconds 30 --cli               # and the command line tool, end to end
    python bench/record_results.py stream_amd_epyc -- python bench/stream_benchmark.py --seconds 30 --cli

A stream of 48 kHz speech is pushed in 20 ms chunks (as a microphone or `distill-mos --stream` sends it), with one
torch thread (one stream per core). Per update: the CPU time of the push that completed a hop (resampling, the
window's scoring) and its wall time, i.e. the latency from the audio that completes a hop to its score. CPU time per
stream-second = all CPU time / seconds of audio; streams sustainable in real time = cores / that. CPU time, not wall
time, because the machine is shared: wall figures (latency) are as loaded as the machine was (load average recorded).
With --cli, `distill-mos --stream -` is fed raw PCM at real time through a pipe and each JSON line's arrival is timed
against the write of the chunk that completed its hop: the latency a user sees, reading and printing included.
"""

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[1]


def speech_48k(seconds: float) -> np.ndarray:
    files = sorted(glob.glob(str(ROOT / "tests" / "data" / "tcdvoip" / "audio" / "**" / "*.wav"), recursive=True))
    parts, total = [], 0
    for f in files:
        x, rate = soundfile.read(f, dtype="float32", always_2d=True)
        assert rate == 48000
        parts.append(x[:, 0])
        total += len(x)
        if total >= seconds * 48000:
            break
    return np.concatenate(parts)[: int(seconds * 48000)]


def measure(scorer, audio: np.ndarray, hop: float) -> dict:
    from distill_mos.stream import StreamScorer

    live = StreamScorer(scorer, hop_seconds=hop)
    chunk = 960  # 20 ms at 48 kHz
    update_cpu, update_wall, all_cpu = [], [], 0.0
    live.push(audio[:chunk], 48000)  # warm-up of the first call's allocations is part of a real stream too
    for i in range(chunk, len(audio), chunk):
        c0, w0 = time.process_time(), time.perf_counter()
        updates = live.push(audio[i : i + chunk], 48000)
        c1, w1 = time.process_time(), time.perf_counter()
        all_cpu += c1 - c0
        if any(not u.partial for u in updates):
            update_cpu.append(c1 - c0)
            update_wall.append(w1 - w0)
    live.flush()
    seconds = len(audio) / 48000
    cpu_per_second = all_cpu / seconds
    cores = os.cpu_count() or 1
    return {
        "updates": len(update_cpu),
        "update_cpu_s_median": float(np.median(update_cpu)),
        "update_latency_s_median": float(np.median(update_wall)),
        "update_latency_s_p95": float(np.percentile(update_wall, 95)),
        "cpu_s_per_stream_second": cpu_per_second,
        "streams_real_time_per_core": 1 / cpu_per_second,
        "cores": cores,
        "streams_real_time_on_this_machine": cores / cpu_per_second,
    }


def measure_cli(audio: np.ndarray, hop: float, dtype: str) -> dict:
    """
    `distill-mos --stream -` as a user runs it (raw 16-bit PCM on stdin, torch's default threads), fed in 20 ms
    chunks at real time: the latency from writing the chunk that completes a hop to reading its JSON line.
    """
    import subprocess
    import threading

    command = [sys.executable, "-m", "distill_mos.cli", "--stream", "-", "--input-format", "s16le", "--input-rate",
               "48000", "--hop", str(hop), "--dtype", dtype]
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    lines: list[tuple[float, dict]] = []
    first = threading.Event()

    def read():
        for line in process.stdout:
            lines.append((time.perf_counter(), json.loads(line)))
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    chunk = 960  # 20 ms
    warm = 72000  # 1.5 s at once: the first line (the 1 s update) says the model is loaded and scoring
    process.stdin.write(pcm[:warm].tobytes())
    process.stdin.flush()
    first.wait(120)
    written = {}  # end sample -> when it was written
    started = time.perf_counter()
    for n, i in enumerate(range(warm, len(pcm), chunk)):
        delay = started + n * chunk / 48000 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        process.stdin.write(pcm[i : i + chunk].tobytes())
        process.stdin.flush()
        written[min(i + chunk, len(pcm))] = time.perf_counter()
    process.stdin.close()
    process.wait(120)
    reader.join(10)
    ends = np.array(sorted(written))
    latencies = []
    for arrived, record in lines:
        if record.get("partial") is False and "end" in record and "windows" in record and "mos" not in record:
            last_sample = round(record["end"] * 48000)
            done = ends[np.searchsorted(ends, last_sample)] if last_sample <= ends[-1] else None
            if done is not None and last_sample > warm:
                latencies.append(arrived - written[int(done)])
    return {"updates": len(latencies), "latency_s_median": float(np.median(latencies)),
            "latency_s_p95": float(np.percentile(latencies, 95)), "latency_s_max": float(np.max(latencies))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of audio per stream (default 30)")
    parser.add_argument("--hop", type=float, default=1.0)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--cli", action="store_true",
                        help="also time `distill-mos --stream -` end to end, fed at real time (--seconds of audio each)")
    parser.add_argument("--json", type=Path, help="write the figures here (for bench/record_results.py)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one stream per core: the figure that scales to N streams on N cores
    from distill_mos import DistillMOSScorer
    from distill_mos.scorer import cpu_has_native_bf16

    audio = speech_48k(args.seconds)
    results = {"seconds": args.seconds, "hop": args.hop, "torch_threads": 1, "native_bf16": cpu_has_native_bf16()}
    print(f"{args.seconds:g} s of 48 kHz speech in 20 ms chunks, hop {args.hop:g} s, 1 torch thread")
    print(f"{'dtype':<9} {'updates':>7} {'CPU/update':>11} {'latency p50':>12} {'p95':>7} {'CPU s/stream-s':>15} "
          f"{'streams/core':>13} {'streams here':>13}")
    for dtype in args.dtypes:
        scorer = DistillMOSScorer.from_pretrained(device="cpu", dtype=dtype)
        r = measure(scorer, audio, args.hop)
        results[dtype] = r
        print(f"{dtype:<9} {r['updates']:>7} {r['update_cpu_s_median']:>10.3f}s {r['update_latency_s_median']:>11.3f}s "
              f"{r['update_latency_s_p95']:>6.3f}s {r['cpu_s_per_stream_second']:>15.3f} "
              f"{r['streams_real_time_per_core']:>13.2f} {r['streams_real_time_on_this_machine']:>13.1f}")
    if args.cli:
        print(f"\ndistill-mos --stream - (raw 16-bit PCM on stdin, torch's default threads), {args.seconds:g} s fed in "
              "20 ms chunks at real time: latency from the chunk that completes a hop to its JSON line")
        print(f"{'dtype':<9} {'updates':>7} {'latency p50':>12} {'p95':>7} {'max':>7}")
        for dtype in args.dtypes:
            r = measure_cli(audio, args.hop, dtype)
            results[f"cli_{dtype}"] = r
            print(f"{dtype:<9} {r['updates']:>7} {r['latency_s_median']:>11.3f}s {r['latency_s_p95']:>6.3f}s "
                  f"{r['latency_s_max']:>6.3f}s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
