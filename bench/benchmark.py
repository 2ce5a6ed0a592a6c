#!/usr/bin/env python
"""
Distill-MOS speed benchmark: ours (exact, ONNX Runtime, fast mode) against the original `distillmos` 0.9.1 on the same
inputs in the same run. Every (case, implementation) runs in a fresh subprocess, so peak memory (ru_maxrss: model,
runtime and audio included) is comparable.

    python bench/benchmark.py                        # cases a-e (e: ours only)
    python bench/benchmark.py --cases e              # the one-hour clip alone: peak memory must stay under 2 GB
    python bench/benchmark.py --cases a b --impls original exact onnx --fast-hop 7.68
    python bench/benchmark.py --padding                  # short clips: padding skipped vs the original (issue 17)
    python bench/benchmark.py --precision                # CPU ISA + float32 / bfloat16 / float16 vs the original
    python bench/benchmark.py --precision-deviation      # |dMOS| vs exact float32, PCC, change in human-MOS PCC

Cases: (a) one 8 s clip, (b) one 60 s clip, (c) 32 clips of 8 s, (d) 100 clips of 1..20 s, (e) one one-hour clip.
Inputs are speech: the bundled 16 kHz test clips (tests/data) end to end, each clip starting at a different offset.
The original is run as its own CLI runs it: one clip per call, all windows of a clip in one batch.
Per case: wall time (best of 5 runs for (a), of 2 for (b), else one run), audio seconds per wall second, peak memory, speed ratio vs the original, scores' max |delta| vs the
original, and the network's achieved FLOP rate as a share of the machine's measured matrix-multiply rate.

`--padding` (issue 17, padding is never computed): (s4) 100 real speech clips of 1.5-4 s and (s1) 100 clips of 1 s,
both as 24 kHz stereo WAV files (decoding and resampling included: the bundled 16 kHz speech cut, resampled and its
channel duplicated), (c16) 16 clips of 7-9 s and (b60) one 60 s clip as 16 kHz arrays; per case the original, ours
(exact float32, padding skipped) and ours computing every frame (`skip_padded_frames=False`), each in its own
process: x original by CPU time and wall, max |dMOS| vs the original, and a floor: the real frames' share of the
work (frames that see audio / 768 per window) x the CPU time per window of the full network measured in the same
process, with how close ours is to it (floor / ours).

`--precision` (issue 12): prints the CPU's ISA features as torch and lscpu report them, whether it has native bfloat16
and what `dtype="auto"` picks, then per dtype on (p16) 16 clips of 8 s, (p60) one 60 s clip and (p60h4) one 60 s clip
with `--window-hop 4`: wall s per window, CPU s per window (process time: less sensitive to a shared machine), x the
original, x exact float32, and mean / max |dMOS| and PCC against exact float32, all in one run with the original
`distillmos`. `--precision-deviation`: the same deviations on every bundled clip and on synthetic lengths of 1-60 s,
and the change in correlation with human MOS on the bundled GenSpeech and TCD-VoIP labels. Both write a JSON file to
bench/results/ named after the CPU unless --json is given.
"""

import argparse
import json
import os
import platform
import re
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
# --precision: cases of issue 12 and the dtypes compared (all of ours are float32-spectrogram + network in the dtype)
PRECISION_CASES = {"p16": "16 clips of 8 s", "p60": "one 60 s clip", "p60h4": "one 60 s clip, --window-hop 4"}
PRECISIONS = ("float32", "bfloat16", "float16")
PRECISION_REPEATS = {"p16": 2, "p60": 2, "p60h4": 3}


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
    if case == "p16":
        return [8.0] * 16
    if case in ("p60", "p60h4"):
        return [60.0]
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

        kwargs = {"window_hop": fast_hop} if impl == "fast" or case == "p60h4" else {}
        if impl in PRECISIONS:
            kwargs["dtype"] = impl
        backend = "onnx" if impl == "onnx" else "torch"
        scorer = DistillMOSScorer.from_pretrained(ROOT, device=device, backend=backend, half=half, **kwargs)
        scorer.score_arrays([clips[0][: WINDOW // 4]], RATE)  # warm-up (and, for onnx, the export if missing)
        def score():
            return [s.mos for s in scorer.score_arrays(clips, RATE)]

        hop = scorer.max_window_hop or HOP
        windows = sum(windows_of(len(c), hop) for c in clips)
    wall = cpu = float("inf")
    repeats = PRECISION_REPEATS.get(case, REPEATS.get(case, 1))
    if impl == "float16" and device == "cpu":
        repeats = 1  # no float16 arithmetic on x86 CPUs: ~10x slower than float32, one run says enough
    for _ in range(repeats):  # best of a few on short cases: the machine may be shared
        start, start_cpu = time.perf_counter(), time.process_time()
        scores = score()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"wall": wall, "cpu": cpu, "peak_mb": peak_mb, "gpu_peak_mb": gpu_peak, "windows": windows,
            "scores": scores, "audio_s": sum(len(c) for c in clips) / RATE, "repeats": repeats,
            "threads": torch.get_num_threads()}


def run_worker(case: str, impl: str, args) -> dict | None:
    hop = 4.0 if case == "p60h4" else args.fast_hop
    command = [sys.executable, __file__, "--worker", case, impl, "--fast-hop", str(hop), "--device", args.device]
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


# --- padding (issue 17): short clips, padding skipped -------------------------------------------------------------

PADDING_CASES = {
    "s4": "100 files of 1.5-4 s, 24 kHz stereo",
    "s1": "100 files of 1 s, 24 kHz stereo",
    "c16": "16 clips of 7-9 s",
    "b60": "one 60 s clip",
}
PADDING_IMPLS = ("original", "exact", "exact-full")
PADDING_REPEATS = {"s4": 1, "s1": 1, "c16": 1, "b60": 1}
FILE_RATE = 24000


def padding_lengths(case: str) -> list[int]:
    """Clip lengths in 16 kHz samples (even, so that 24 kHz files hold exactly 1.5 x as many samples)."""
    generator = np.random.default_rng(17)
    seconds = {"s4": generator.uniform(1.5, 4.0, 100), "s1": np.ones(100), "c16": generator.uniform(7.0, 9.0, 16),
               "b60": [60.0]}[case]
    return [2 * int(round(s * RATE / 2)) for s in seconds]


def padding_clips(case: str) -> list[np.ndarray]:
    """16 kHz real speech of the case's lengths, each clip from another offset of the bundled speech."""
    source = speech_source()
    return [np.resize(np.roll(source, -(i * 37_337) % len(source)), n).astype(np.float32)
            for i, n in enumerate(padding_lengths(case))]


def write_padding_files(case: str, folder: Path) -> list[Path]:
    """The case's clips as 24 kHz stereo 16-bit WAV files (torchaudio's resampler; both channels the same)."""
    import soundfile as sf
    import torch
    import torchaudio

    paths = []
    for index, clip in enumerate(padding_clips(case)):
        upsampled = torchaudio.functional.resample(torch.from_numpy(clip)[None], RATE, FILE_RATE)[0].numpy()
        path = folder / f"{case}_{index:03d}.wav"
        sf.write(path, np.stack([upsampled, upsampled], axis=1), FILE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def padded_window_shares(lengths: list[int], config) -> list[float]:
    """Per window of the clips: frames that see audio / all frames (1 for a full window)."""
    from modeling_distillmos import DistillMOSSpectrogram

    spectrogram, frames = DistillMOSSpectrogram(config), config.window_length // config.stft_hop_length
    shares = []
    for n in lengths:
        if n >= config.window_length:
            shares += [1.0] * windows_of(n, HOP)
        else:
            shares.append(spectrogram.frames_seeing_audio(n, config.window_length) / frames)
    return shares


def padding_worker(case: str, impl: str, folder: Path) -> dict:
    """One (case, implementation) measurement: files for s4 / s1 (decoded in the timed part), arrays otherwise."""
    import contextlib
    import io

    import torch

    files = case in ("s4", "s1")
    paths = sorted(folder.glob(f"{case}_*.wav")) if files else None
    clips = None if files else padding_clips(case)
    network_s_per_window = None
    if impl == "original":
        import distillmos
        import torchaudio

        with contextlib.redirect_stdout(io.StringIO()):
            model = distillmos.ConvTransformerSQAModel().eval()
        with torch.no_grad():
            model(torch.from_numpy(speech_source()[: WINDOW // 4])[None])

        def score():  # as its CLI (distillmos.sqa._infer_file_list): torchaudio.load, first channel, Resample
            results = []
            with torch.no_grad():
                for item in paths or clips:
                    if files:
                        x, sr = torchaudio.load(str(item))
                        x = torchaudio.transforms.Resample(sr, RATE)(x[0, None, :])
                    else:
                        x = torch.from_numpy(item)[None]
                    results.append(model(x).item())
            return results
    else:
        from distill_mos import DistillMOSScorer

        scorer = DistillMOSScorer.from_pretrained(ROOT, device="cpu")
        scorer.model.config.skip_padded_frames = impl == "exact"
        scorer.score_arrays([speech_source()[: WINDOW // 4]], RATE)  # warm-up

        def score():
            if files:
                return [r.mos for r in scorer.score_files(paths)]
            return [r.mos for r in scorer.score_prepared(clips)]

        # the full network's CPU time per window, in this process: the floor's rate
        windows = torch.from_numpy(np.stack([np.resize(np.roll(speech_source(), -i * 7_919), WINDOW)
                                             for i in range(2 * torch.get_num_threads())]))
        with torch.inference_mode():
            scorer.model.score_windows(windows[:2])
            start = time.process_time()
            scorer.model.score_windows(windows)
            network_s_per_window = (time.process_time() - start) / windows.shape[0]
    wall = cpu = float("inf")
    for _ in range(PADDING_REPEATS[case]):
        start, start_cpu = time.perf_counter(), time.process_time()
        scores = score()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    lengths = padding_lengths(case)
    return {"wall": wall, "cpu": cpu, "scores": scores, "network_cpu_s_per_window": network_s_per_window,
            "windows": sum(windows_of(n, HOP) for n in lengths), "audio_s": sum(lengths) / RATE,
            "repeats": PADDING_REPEATS[case], "threads": torch.get_num_threads()}


def padding_benchmark(args) -> int:
    """Each padding case: the original, ours and ours computing every frame, side by side in fresh processes."""
    import tempfile

    import torch

    from modeling_distillmos import DistillMOSConfig

    config = DistillMOSConfig.from_pretrained(ROOT)
    info = cpu_report()
    print_cpu_report(info)
    start_load = load_text()
    print(f"load average at start: {start_load} (1/5/15 min; the machine has {os.cpu_count()} logical CPUs)\n")
    header = (f"{'case':<40} {'impl':<10} {'windows':>7} {'wall s':>7} {'CPU s':>7} {'x orig':>7} {'(CPU)':>6} "
              f"{'max|dMOS|':>9} {'floor CPU s':>11} {'floor/ours':>10}")
    print(header)
    print("-" * len(header))
    rows = []
    with tempfile.TemporaryDirectory(prefix="distill-mos-padding-") as folder:
        for case in args.padding_cases:
            if case in ("s4", "s1"):
                write_padding_files(case, Path(folder))
            results = {}
            shares = padded_window_shares(padding_lengths(case), config)
            for impl in PADDING_IMPLS:
                if impl == "exact-full" and min(padding_lengths(case)) >= WINDOW:
                    continue  # no padding: the same computation as exact
                command = [sys.executable, __file__, "--padding-worker", case, impl, folder]
                environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
                done = subprocess.run(command, capture_output=True, text=True, env=environment)
                if done.returncode != 0:
                    print(f"  ({case}, {impl}) failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                result = results[impl] = json.loads(done.stdout.strip().splitlines()[-1])
                original = results.get("original")
                row = {"case": case, "description": PADDING_CASES[case], "impl": impl, **result,
                       "real_frame_share": sum(shares) / len(shares), "load_average": load_text()}
                if original and impl != "original":
                    row["x_original"] = original["wall"] / result["wall"]
                    row["x_original_cpu"] = original["cpu"] / result["cpu"]
                    row["max_abs_vs_original"] = float(np.abs(np.subtract(result["scores"], original["scores"])).max())
                if result["network_cpu_s_per_window"]:
                    row["floor_cpu_s"] = result["network_cpu_s_per_window"] * sum(shares)
                    row["floor_over_ours"] = row["floor_cpu_s"] / result["cpu"]
                rows.append(row)
                nan = float("nan")
                print(f"{case + ') ' + PADDING_CASES[case]:<40} {impl:<10} {result['windows']:>7} "
                      f"{result['wall']:>7.2f} {result['cpu']:>7.2f} {row.get('x_original', nan):>7.2f} "
                      f"{row.get('x_original_cpu', nan):>6.2f} {row.get('max_abs_vs_original', nan):>9.1e} "
                      f"{row.get('floor_cpu_s', nan):>11.2f} {row.get('floor_over_ours', nan):>10.2f}", flush=True)
    end_load = load_text()
    print(f"\nload average at end: {end_load}")
    print("exact = float32, padding skipped (the default); exact-full = skip_padded_frames=False. x orig = original / "
          "ours, by wall and (CPU) by process CPU time (all threads; less disturbed by other jobs). floor = the real "
          "frames' share of the work (frames that see audio / 768, per window) x the full network's CPU s per window "
          "measured in that process; floor/ours = how close ours gets to it (1 = at the floor; the transformer's 384 "
          "frames, the STFT and decoding are not in the share). Targets (issue 17): s4 >= 2.0, s1 >= 3, c16 >= 1.3, "
          "b60 >= 1.6. On a loaded machine the original's 2-thread ops spin at their barriers (CPU time and wall "
          "grow with the load) while ours runs one single-threaded window per core: exact against exact-full is the "
          "ratio that does not depend on the load.")
    figures = {"machine": info, "load_average_start": start_load, "load_average_end": end_load,
               "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "threads": torch.get_num_threads(),
               "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


# --- precision (issue 12): ISA report, dtypes side by side, deviation -----------------------------------------------

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "avx_ne_convert", "amx_tile",
             "amx_bf16", "amx_int8", "amx_fp16")


def cpu_report() -> dict:
    """
    The CPU and the ISA features that decide the precision paths, as torch reads them from cpuid and as `lscpu`
    lists them, with what `dtype="auto"` resolves to on this CPU.
    """
    import torch

    from distill_mos.scorer import cpu_has_native_bf16, resolve_dtype

    model_name, flags = platform.processor() or platform.machine(), set()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model_name = value.strip()
        elif key.strip() == "Flags":
            flags = set(value.split())
    return {
        "cpu": model_name,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "amx_tile": bool(torch.cpu._is_amx_tile_supported()),
        "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "mkldnn_fp16": bool(torch.ops.mkldnn._is_mkldnn_fp16_supported()),
        "lscpu_flags": [f for f in ISA_FLAGS if f in flags],
        "native_bf16": cpu_has_native_bf16(),
        "auto_dtype": str(resolve_dtype("auto", torch.device("cpu"))).replace("torch.", ""),
    }


def print_cpu_report(info: dict) -> None:
    print(f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, {info['threads']} threads")
    print(f"torch: cpu capability {info['cpu_capability']}, avx512_bf16 {info['avx512_bf16']}, "
          f"amx_tile {info['amx_tile']}, oneDNN bf16 {info['mkldnn_bf16']}, oneDNN fp16 {info['mkldnn_fp16']}")
    print(f"lscpu flags: {' '.join(info['lscpu_flags']) or '(none of ' + ', '.join(ISA_FLAGS) + ')'}")
    if info["native_bf16"]:
        units = "AMX" if info["amx_tile"] else "AVX512_BF16 (no AMX)"
        print(f"native bfloat16: yes, {units}; dtype='auto' picks {info['auto_dtype']}")
    else:
        print(f"native bfloat16: NO (neither AVX512_BF16 nor AMX); bfloat16 runs emulated here; "
              f"dtype='auto' picks {info['auto_dtype']}")
    if not info["mkldnn_fp16"]:
        print("float16: no native float16 arithmetic on this CPU (oneDNN fp16 unsupported): expect it to be slow")


def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def deviation_stats(scores, reference) -> dict:
    """Mean and max |dMOS| and Pearson correlation of `scores` against `reference` (PCC only for 3+ clips)."""
    scores, reference = np.asarray(scores, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    delta = np.abs(scores - reference)
    pcc = float(np.corrcoef(scores, reference)[0, 1]) if len(scores) > 2 else None
    return {"mean_abs": float(delta.mean()), "max_abs": float(delta.max()), "pcc": pcc, "n": int(len(scores))}


def results_path(info: dict, kind: str) -> Path:
    """bench/results/<kind>_<cpu model>.json: the file names the CPU the figures were measured on."""
    slug = re.sub(r"[^a-z0-9]+", "_", info["cpu"].lower()).strip("_") or "cpu"
    return ROOT / "bench" / "results" / f"{kind}_{slug}.json"


def precision_benchmark(args) -> int:
    """Each dtype against the original and exact float32 on the cases of issue 12, each run in a fresh process."""
    info = cpu_report()
    print_cpu_report(info)
    start_load = load_text()
    print(f"load average at start: {start_load} (1/5/15 min; the machine has {os.cpu_count()} logical CPUs)")
    print()
    header = (f"{'case':<38} {'impl':<9} {'windows':>7} {'wall s':>7} {'s/window':>8} {'CPU s/w':>8} {'x orig':>7} "
              f"{'(CPU)':>6} {'x exact':>7} {'(CPU)':>6} {'mean|d|':>8} {'max|d|':>8} {'PCC':>8}")
    print(header)
    print("-" * len(header))
    rows = []
    results: dict[tuple[str, str], dict | None] = {}
    for case in args.precision_cases:
        impls = ["original"] + list(args.precisions)
        if "float32" not in impls:
            impls.insert(1, "float32")
        for impl in impls:
            if impl == "original" and case == "p60h4":
                # the original has no window hop: its 60 s run (1 s hop, as its CLI) is the reference
                result = results.get(("p60", "original")) or run_worker("p60", "original", args)
            else:
                result = run_worker(case, impl, args)
            results[(case, impl)] = result
            if result is None:
                continue
            original, exact = results.get((case, "original")), results.get((case, "float32"))
            row = {"case": case, "description": PRECISION_CASES[case], "impl": impl, "windows": result["windows"],
                   "wall_s": result["wall"], "cpu_s": result["cpu"], "s_per_window": result["wall"] / result["windows"],
                   "cpu_s_per_window": result["cpu"] / result["windows"], "repeats": result["repeats"],
                   "threads": result["threads"], "scores": result["scores"], "load_average": load_text()}
            if original and impl != "original":
                row["x_original"] = original["wall"] / result["wall"]
                row["x_original_cpu"] = original["cpu"] / result["cpu"]  # same audio: total CPU time against total
                row["max_abs_vs_original"] = float(np.abs(np.subtract(result["scores"], original["scores"])).max())
            if exact and impl not in ("original", "float32"):
                row["x_exact"] = exact["wall"] / result["wall"]
                row["x_exact_cpu"] = exact["cpu"] / result["cpu"]
                row["deviation_vs_exact"] = deviation_stats(result["scores"], exact["scores"])
            rows.append(row)
            dev = row.get("deviation_vs_exact", {})
            pcc = dev.get("pcc")
            print(f"{case + ') ' + PRECISION_CASES[case]:<38} {impl:<9} {row['windows']:>7} {row['wall_s']:>7.2f} "
                  f"{row['s_per_window']:>8.3f} {row['cpu_s_per_window']:>8.3f} "
                  f"{row.get('x_original', float('nan')):>7.2f} {row.get('x_original_cpu', float('nan')):>6.2f} "
                  f"{row.get('x_exact', float('nan')):>7.2f} {row.get('x_exact_cpu', float('nan')):>6.2f} "
                  f"{dev.get('mean_abs', float('nan')):>8.4f} {dev.get('max_abs', float('nan')):>8.4f} "
                  f"{pcc if pcc is not None else float('nan'):>8.5f}", flush=True)
    end_load = load_text()
    print(f"\nload average at end: {end_load}")
    print("x orig = original wall / ours (the original scores every clip in one batch at a 1 s hop, as its CLI; for "
          "p60h4 that same 1 s-hop run). x exact = our float32 at the same window hop / this dtype. (CPU): the same ratios "
          "of process CPU time (all threads), less disturbed by other jobs than wall time; on a busy machine a run may "
          "get less than all cores, so wall ratios mix in the load. CPU s/w = CPU time per window. "
          "mean|d|, max|d|, PCC: against exact float32 on the same clips (PCC needs 3+ clips).")
    if not info["native_bf16"]:
        print(f"This CPU has no native bfloat16: bfloat16 is emulated and slower; dtype='auto' uses {info['auto_dtype']}.")
    path = args.json or results_path(info, "cpu_precision")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": info, "load_average_start": start_load, "load_average_end": end_load,
                                "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


SYNTHETIC_LENGTHS_S = (1, 2, 3, 5, 7.68, 10, 15, 20, 30, 45, 60)


def _human_label_sets() -> dict[str, list[tuple[Path, float]]]:
    """The bundled rated clips: {set name: [(wav path, human MOS)]} from tests/data/*/labels.csv."""
    import csv

    sets = {}
    for name, folder in (("GenSpeech", "genspeech"), ("TCD-VoIP", "tcdvoip")):
        base = ROOT / "tests" / "data" / folder
        with open(base / "labels.csv", newline="") as handle:
            sets[name] = [(base / row["file"], float(row["mos"])) for row in csv.DictReader(handle) if row["mos"].strip()]
    return sets


def precision_deviation(args) -> int:
    """
    Each dtype against exact float32: all bundled clips and synthetic lengths of 1-60 s (mean / max |dMOS|, PCC), and
    the change in Pearson / Spearman correlation with the human MOS of the bundled GenSpeech and TCD-VoIP labels.
    """
    import contextlib
    import io

    import soundfile as sf
    import torch
    from scipy.stats import spearmanr

    from distill_mos import DistillMOSScorer

    info = cpu_report()
    print_cpu_report(info)
    start_load = load_text()
    print(f"load average at start: {start_load}")
    files = sorted((ROOT / "tests" / "data").glob("*/audio/**/*.wav"))
    exact = DistillMOSScorer.from_pretrained(ROOT, device="cpu", dtype="float32")

    def read16k(path: Path) -> np.ndarray:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        return exact.prepare(audio[:, 0], rate)

    bundled = {str(p.relative_to(ROOT / "tests" / "data")): read16k(p) for p in files}
    source = speech_source()
    synthetic = {f"{s:g} s": np.resize(np.roll(source, -i * 51_111), int(round(s * RATE))).astype(np.float32)
                 for i, s in enumerate(SYNTHETIC_LENGTHS_S)}
    labelled = _human_label_sets()
    label_index = {name: [str(p.relative_to(ROOT / "tests" / "data")) for p, _ in rows] for name, rows in labelled.items()}

    import distillmos  # the original, as a check that our float32 is the exact reference

    with contextlib.redirect_stdout(io.StringIO()):
        original = distillmos.ConvTransformerSQAModel().eval()
    with torch.no_grad():
        original_scores = {k: original(torch.from_numpy(v)[None]).item() for k, v in {**bundled, **synthetic}.items()}

    scores, timing = {}, {}
    dtypes = ["float32"] + [d for d in args.precisions if d != "float32"]
    for dtype in dtypes:
        scorer = DistillMOSScorer.from_pretrained(ROOT, device="cpu", dtype=dtype)
        start = time.process_time()
        scores[dtype] = {
            **dict(zip(bundled, (s.mos for s in scorer.score_prepared(list(bundled.values()))))),
            **dict(zip(synthetic, (s.mos for s in scorer.score_prepared(list(synthetic.values()))))),
        }
        timing[dtype] = time.process_time() - start
        print(f"  scored {len(bundled)} bundled clips + {len(synthetic)} synthetic lengths in {dtype} "
              f"({timing[dtype]:.0f} CPU s; load {load_text()})", flush=True)

    reference = scores["float32"]
    report = {"machine": info, "load_average_start": start_load, "synthetic_lengths_s": list(SYNTHETIC_LENGTHS_S),
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "scores": scores,
              "original_scores": original_scores, "deviation": {}, "human_mos": {}}
    print(f"\n{'dtype':<9} {'material':<28} {'n':>3} {'mean|dMOS|':>10} {'max|dMOS|':>10} {'PCC vs exact':>12}")
    materials = {f"bundled clips ({len(bundled)})": list(bundled), f"synthetic 1-60 s ({len(synthetic)})": list(synthetic)}
    materials["all"] = list(bundled) + list(synthetic)
    for dtype in dtypes:
        report["deviation"][dtype] = {}
        for material, keys in materials.items():
            against = original_scores if dtype == "float32" else reference
            stats = deviation_stats([scores[dtype][k] for k in keys], [against[k] for k in keys])
            report["deviation"][dtype][material] = stats
            label = "float32*" if dtype == "float32" else dtype
            print(f"{label if material == next(iter(materials)) else '':<9} {material:<28} {stats['n']:>3} "
                  f"{stats['mean_abs']:>10.2e} {stats['max_abs']:>10.2e} {stats['pcc']:>12.6f}")
    print(f"\n{'set':<10} {'n':>3} {'dtype':<9} {'PCC':>7} {'dPCC':>8} {'SRCC':>7} {'dSRCC':>8}  (correlation with human MOS)")
    for name, rows in labelled.items():
        human = [mos for _, mos in rows]
        report["human_mos"][name] = {}
        for dtype in dtypes:
            predicted = [scores[dtype][k] for k in label_index[name]]
            pcc = float(np.corrcoef(predicted, human)[0, 1])
            srcc = float(spearmanr(predicted, human).statistic)
            base = report["human_mos"][name].get("float32", {"pcc": pcc, "srcc": srcc})
            entry = {"n": len(human), "pcc": pcc, "srcc": srcc, "pcc_change": pcc - base["pcc"],
                     "srcc_change": srcc - base["srcc"]}
            report["human_mos"][name][dtype] = entry
            print(f"{name:<10} {len(human):>3} {dtype:<9} {pcc:>7.4f} {entry['pcc_change']:>+8.4f} {srcc:>7.4f} "
                  f"{entry['srcc_change']:>+8.4f}")
    report["load_average_end"] = load_text()
    print("* float32 rows: our float32 against the original `distillmos` (the exactness check); other rows: against our "
          "float32. dPCC / dSRCC: change against our float32.")
    print(f"\nload average at end: {report['load_average_end']}. Goals (issue 12): mean |dMOS| <= 0.01, max <= 0.05, "
          "PCC vs exact >= 0.999, correlation with human MOS lower by at most 0.005.")
    path = args.json or results_path(info, "precision_deviation")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


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
    parser.add_argument("--precision", action="store_true",
                        help="instead: CPU ISA features and float32 / bfloat16 / float16 against the original (issue 12)")
    parser.add_argument("--precision-cases", nargs="+", default=list(PRECISION_CASES), choices=list(PRECISION_CASES))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--precision-deviation", action="store_true",
                        help="instead: each dtype's deviation from exact float32 on bundled clips and 1-60 s lengths, "
                             "and the change in correlation with human MOS")
    parser.add_argument("--padding", action="store_true",
                        help="instead: short clips with padding skipped against the original (issue 17)")
    parser.add_argument("--padding-cases", nargs="+", default=list(PADDING_CASES), choices=list(PADDING_CASES))
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--padding-worker", nargs=3, metavar=("CASE", "IMPL", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.worker:
        print(json.dumps(worker(*args.worker, args.fast_hop, args.device, args.half)))
        return 0
    if args.padding_worker:
        case, impl, folder = args.padding_worker
        print(json.dumps(padding_worker(case, impl, Path(folder))))
        return 0
    if args.padding:
        return padding_benchmark(args)
    if args.deviation is not None:
        deviation(args.deviation or [4.0, 7.68])
        return 0
    if args.precision:
        return precision_benchmark(args)
    if args.precision_deviation:
        return precision_deviation(args)

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
