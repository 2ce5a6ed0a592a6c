#!/usr/bin/env python
"""
Distill-MOS speed benchmark: ours (exact, ONNX Runtime, fast mode) against the original `distillmos` 0.9.1 on the same
inputs in the same run. Every (case, implementation) runs in a fresh subprocess, so peak memory (ru_maxrss: model,
runtime and audio included) is comparable.

    python bench/benchmark.py                        # cases a-e (e: ours only)
    python bench/benchmark.py --cases e              # the one-hour clip alone: peak memory must stay under 2 GB
    python bench/benchmark.py --cases a b --impls original exact onnx --fast-hop 7.68

Cases: (a) one 8 s clip, (b) one 60 s clip, (c) 32 clips of 8 s, (d) 100 clips of 1..20 s, (e) one one-hour clip.
Inputs are speech: the bundled 16 kHz test clips (tests/data) end to end, each clip starting at a different offset.
The original is run as its own CLI runs it: one clip per call, all windows of a clip in one batch.
Per case: wall time (best of 5 runs for (a), of 2 for (b), else one run), audio seconds per wall second, peak memory, speed ratio vs the original, scores' max |delta| vs the
original, and the network's achieved FLOP rate as a share of the machine's measured matrix-multiply rate.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RATE, WINDOW, HOP = 16000, 122880, 16000
CASES = {
    "a": "one 8 s clip",
    "b": "one 60 s clip",
    "c": "32 clips of 8 s",
    "d": "100 clips of 1..20 s",
    "e": "one 1-hour clip",
}
IMPLS = ("original", "exact", "onnx", "fast")
REPEATS = {"a": 5, "b": 2, "c": 1, "d": 1, "e": 1}


def case_lengths(case: str) -> list[float]:
    """Clip lengths in seconds."""
    if case == "a":
        return [8.0]
    if case == "b":
        return [60.0]
    if case == "c":
        return [8.0] * 32
    if case == "d":
        return [round(float(s), 3) for s in np.random.default_rng(0).uniform(1.0, 20.0, 100)]
    if case == "e":
        return [3600.0]
    raise ValueError(case)


def speech_source() -> np.ndarray:
    import soundfile as sf

    clips = [sf.read(p, dtype="float32")[0] for p in sorted((ROOT / "tests" / "data").glob("*/audio/**/*.wav"))
             if sf.info(p).samplerate == RATE]
    return np.concatenate(clips)


def case_audio(case: str) -> list[np.ndarray]:
    source = speech_source()
    clips = []
    for index, seconds in enumerate(case_lengths(case)):
        samples = int(round(seconds * RATE))
        offset = (index * 37_337) % len(source)
        clips.append(np.resize(np.roll(source, -offset), samples).astype(np.float32))
    return clips


def windows_of(samples: int, hop: int) -> int:
    return int(np.ceil(max(samples - WINDOW, 0) / hop)) + 1


# --- FLOPs and the machine's matmul rate -----------------------------------------------------------------------------


def flops_per_window(config) -> dict[str, float]:
    """Multiply-adds x 2 of one window, from the layer shapes (elementwise ops, STFT and softmax not counted)."""
    bins, frames = config.num_frequency_bins, config.window_length // config.stft_hop_length
    conv, channels = 0, 2
    for out_channels, f_stride, t_stride in zip(config.conv_dim, config.conv_frequency_stride, config.conv_time_stride):
        bins = (bins - config.conv_kernel) // f_stride + 1
        frames = (frames + 2 * (config.conv_kernel // 2) - config.conv_kernel) // t_stride + 1
        conv += out_channels * bins * frames * channels * config.conv_kernel**2
        channels = out_channels
    d, n, ff = config.hidden_size, frames, config.intermediate_size
    projection = n * config.conv_output_size * d
    per_layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * ff
    transformer = config.num_hidden_layers * per_layer
    pooling = n * d * config.pooling_hidden_size + n * config.pooling_hidden_size + n * d + d
    return {"conv": 2 * conv, "projection": 2 * projection, "transformer": 2 * transformer, "pooling": 2 * pooling}


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# --- one measurement, in its own process ----------------------------------------------------------------------------


def worker(case: str, impl: str, fast_hop: float, device: str, half: bool) -> dict:
    import torch

    clips = case_audio(case)
    if impl == "original":
        import contextlib
        import io

        import distillmos

        with contextlib.redirect_stdout(io.StringIO()):
            model = distillmos.ConvTransformerSQAModel().eval().to(device)
        warm = torch.from_numpy(clips[0][: WINDOW // 4])[None].to(device)
        with torch.no_grad():
            model(warm)
        def score():
            with torch.no_grad():
                return [model(torch.from_numpy(clip)[None].to(device)).item() for clip in clips]

        windows = sum(windows_of(len(c), HOP) for c in clips)
    else:
        from distill_mos import DistillMOSScorer

        kwargs = {"window_hop": fast_hop} if impl == "fast" else {}
        backend = "onnx" if impl == "onnx" else "torch"
        scorer = DistillMOSScorer.from_pretrained(ROOT, device=device, backend=backend, half=half, **kwargs)
        scorer.score_arrays([clips[0][: WINDOW // 4]], RATE)  # warm-up (and, for onnx, the export if missing)
        def score():
            return [s.mos for s in scorer.score_arrays(clips, RATE)]

        hop = scorer.max_window_hop or HOP
        windows = sum(windows_of(len(c), hop) for c in clips)
    wall = float("inf")
    for _ in range(REPEATS[case]):  # best of a few on short cases: the machine may be shared
        start = time.perf_counter()
        scores = score()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = min(wall, time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"wall": wall, "peak_mb": peak_mb, "gpu_peak_mb": gpu_peak, "windows": windows, "scores": scores,
            "audio_s": sum(len(c) for c in clips) / RATE}


def run_worker(case: str, impl: str, args) -> dict | None:
    command = [sys.executable, __file__, "--worker", case, impl, "--fast-hop", str(args.fast_hop), "--device", args.device]
    if args.half:
        command.append("--half")
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        print(f"  ({case}, {impl}) failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def deviation(hops: list[float], seconds: float = 60.0) -> None:
    """Fast mode against exact mode: mean / max |delta MOS| and PCC, on the sample files and on long recordings."""
    import soundfile as sf
    import torch

    from distill_mos import DistillMOSScorer

    data = ROOT / "tests" / "data"
    files = sorted(data.glob("*/audio/**/*.wav"))
    exact = DistillMOSScorer.from_pretrained(ROOT, device="cpu")

    def read16k(path: Path) -> np.ndarray:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        return exact.prepare(audio[:, 0], rate)

    # long recordings of one condition: a GenSpeech codec's two talkers end to end, or a TCD-VoIP clip, looped
    groups: dict[str, list[Path]] = {}
    for path in files:
        key = path.stem if "genspeech" in str(path) else str(path)
        groups.setdefault(key, []).append(path)
    long_clips = [np.resize(np.concatenate([read16k(p) for p in group]), int(seconds * RATE)) for group in groups.values()]
    spliced = np.resize(np.concatenate([read16k(p) for p in files]), int(seconds * RATE))
    sets = {
        f"sample files ({len(files)}, 7-9 s)": [read16k(p) for p in files],
        f"{len(long_clips)} x {seconds:.0f} s, one condition each": long_clips,
        f"1 x {seconds:.0f} s, 18 conditions spliced": [spliced],
    }
    print(f"{'material':<36} {'hop s':>6} {'windows':>9} {'speed-up':>8} {'mean|d|':>8} {'max|d|':>8} {'PCC':>7}")
    for name, clips in sets.items():
        start = time.perf_counter()
        reference = np.array([s.mos for s in exact.score_arrays(clips, RATE)])
        exact_wall = time.perf_counter() - start
        exact_windows = sum(windows_of(len(c), HOP) for c in clips)
        print(f"{name:<36} {'exact':>6} {exact_windows:>9} {'1.00':>8} {'':>8} {'':>8} {'':>7}", flush=True)
        for hop in hops:
            fast = DistillMOSScorer(exact.model, exact.feature_extractor, window_hop=hop)
            start = time.perf_counter()
            scores = np.array([s.mos for s in fast.score_arrays(clips, RATE)])
            wall = time.perf_counter() - start
            delta = np.abs(scores - reference)
            pcc = np.corrcoef(scores, reference)[0, 1] if len(clips) > 2 else float("nan")
            windows = sum(windows_of(len(c), fast.max_window_hop) for c in clips)
            print(f"{'':<36} {hop:>6.2f} {windows:>9} {exact_wall / wall:>8.2f} {delta.mean():>8.4f} "
                  f"{delta.max():>8.4f} {pcc:>7.4f}", flush=True)
    del torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--fast-hop", type=float, default=7.68, help="window spacing of fast mode, seconds")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--half", action="store_true", help="ours in float16 autocast (CUDA only)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--deviation", nargs="*", type=float, metavar="HOP",
                        help="instead: fast mode's deviation from exact mode at these window spacings (default 4 7.68)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.worker:
        print(json.dumps(worker(*args.worker, args.fast_hop, args.device, args.half)))
        return 0
    if args.deviation is not None:
        deviation(args.deviation or [4.0, 7.68])
        return 0

    from modeling_distillmos import DistillMOSConfig

    config = DistillMOSConfig.from_pretrained(ROOT)
    flops = flops_per_window(config)
    per_window = sum(flops.values())
    rate = matmul_gflops()
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("network FLOPs per 7.68 s window: " + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in flops.items())
          + f"; total {per_window / 1e9:.2f} GFLOP")
    print(f"measured float32 matmul (2048^3, {torch.get_num_threads()} threads): {rate:.0f} GFLOP/s "
          f"-> lower bound {per_window / 1e9 / rate:.3f} s per window")
    print()
    header = (f"{'case':<24} {'impl':<10} {'windows':>7} {'wall s':>8} {'audio s/s':>9} {'peak MB':>8} "
              f"{'x orig':>7} {'max|dMOS|':>9} {'GFLOP/s':>8} {'%matmul':>7}")
    print(header)
    print("-" * len(header))
    results = {}
    for case in args.cases:
        impls = [i for i in args.impls if not (case == "e" and i == "original")]  # the original cannot: see README
        for impl in impls:
            result = run_worker(case, impl, args)
            results[(case, impl)] = result
            if result is None:
                continue
            reference = results.get((case, "original"))
            ratio = f"{reference['wall'] / result['wall']:.2f}" if reference and impl != "original" else ""
            delta = ""
            if reference and impl != "original":
                delta = f"{np.abs(np.array(result['scores']) - np.array(reference['scores'])).max():.1e}"
            achieved = result["windows"] * per_window / result["wall"] / 1e9
            print(f"{case + ') ' + CASES[case]:<24} {impl:<10} {result['windows']:>7} {result['wall']:>8.2f} "
                  f"{result['audio_s'] / result['wall']:>9.1f} {result['peak_mb']:>8.0f} {ratio:>7} {delta:>9} "
                  f"{achieved:>8.1f} {100 * achieved / rate:>6.0f}%", flush=True)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; matmul rate at end: "
          f"{matmul_gflops():.0f} GFLOP/s (%matmul uses the rate at start; >100% means the machine was busier then)")
    print(f"fast = window spacing {args.fast_hop} s (opt-in; not exact). x orig = original wall / ours. "
          "peak MB = ru_maxrss of the process (model + runtime + audio).")
    if args.json:
        args.json.write_text(json.dumps({f"{c}/{i}": r for (c, i), r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
