#!/usr/bin/env python
"""
Live scoring cost (issue 18 §5): per-update CPU time and latency of `distill_mos.stream.StreamScorer`, and how many
live streams at a 1 s hop this machine sustains in real time, in float32 and bfloat16.

    python bench/stream_benchmark.py --seconds 30                     # prints a table
    python bench/record_results.py stream_amd_epyc -- python bench/stream_benchmark.py --seconds 30

A stream of 48 kHz speech is pushed in 20 ms chunks (as a microphone or `distill-mos --stream` sends it), with one
torch thread (one stream per core). Per update: the CPU time of the push that completed a hop (resampling, the
window's scoring) and its wall time, i.e. the latency from the audio that completes a hop to its score. CPU time per
stream-second = all CPU time / seconds of audio; streams sustainable in real time = cores / that. CPU time, not wall
time, because the machine is shared: wall figures (latency) are as loaded as the machine was (load average recorded).
"""

import argparse
import glob
import json
import os
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of audio per stream (default 30)")
    parser.add_argument("--hop", type=float, default=1.0)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
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
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
