#!/usr/bin/env python
"""
GPU benchmark (run it where a CUDA GPU is available; prints figures and writes a JSON file):

1. windows/s of the network for float32 (exact: the model turns cuDNN's TF32 off itself; and float32-tf32, the
   opt-in `model.allow_tf32 = True`), float16 and bfloat16, at several window batch sizes, beside the original
   `distillmos` model on the same GPU (with torch's default flags, i.e. TF32 convolutions, and with TF32 off);
2. deviation of each precision against the original (float32, on the same GPU, TF32 off) on the bundled clips and on
   synthetic lengths of 1-60 s;
3. end to end: 100 WAV clips of mixed length (1-20 s) and rate (8-48 kHz) decoded, resampled and scored by
   `DistillMOSScorer.score_files`, beside the original CLI's own procedure (torchaudio Resample, one file at a time).

    python bench/gpu_benchmark.py --output bench/results/gpu.json
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchmark import speech_source  # noqa: E402
from cli_benchmark import make_folder  # noqa: E402

WINDOW = 122_880
DTYPES = {"float32": torch.float32, "float32-tf32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BATCH_SIZES = (1, 8, 32, 64, 128, 256)
LENGTHS_S = (1, 2, 5, 7.68, 10, 20, 30, 60)


TORCH_DEFAULT_TF32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def set_tf32(enabled: bool | None) -> None:
    """True/False for the original model's runs; None restores torch's defaults (our model sets its own)."""
    if enabled is None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = TORCH_DEFAULT_TF32
    else:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled


def time_it(function, min_seconds: float = 1.0, min_reps: int = 3) -> float:
    """Mean seconds per call after two warm-up calls (cuDNN picks its kernels then)."""
    for _ in range(2):
        function()
    torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_seconds:
        function()
        reps += 1
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def windows_from(source: np.ndarray, count: int) -> torch.Tensor:
    starts = (np.arange(count) * 37_337) % (len(source) - WINDOW)
    return torch.from_numpy(np.stack([source[s : s + WINDOW] for s in starts]))


def load_ours(name: str):
    from modeling_distillmos import DistillMOSModel

    model = DistillMOSModel.from_pretrained(str(ROOT), dtype=DTYPES[name]).to("cuda").eval()
    model.allow_tf32 = name == "float32-tf32"
    return model


def profile_single_window(results: dict, source: np.ndarray, original) -> None:
    """Where one window's time goes (batch 1), ours in float32 against the original: top CUDA/CPU ops."""
    from torch.profiler import ProfilerActivity, profile

    window = windows_from(source, 1).cuda()
    set_tf32(False)
    model = load_ours("float32")
    for name, call in (("original", original), ("float32", model.score_windows)):
        with torch.inference_mode():
            for _ in range(3):
                call(window)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    call(window)
                torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12)
        print(f"--- batch-1 profile, {name} (5 windows) ---\n{table}")
        results.setdefault("profile_batch1", {})[name] = table
    set_tf32(None)


def throughput(results: dict, source: np.ndarray, original) -> None:
    windows = windows_from(source, max(BATCH_SIZES)).cuda()
    rows = results["throughput"] = []
    for name in ["original-default-flags", "original-tf32-off"] + list(DTYPES):
        if name.startswith("original"):
            set_tf32(None if name == "original-default-flags" else False)
            model, call = original, lambda batch: original(batch)
        else:
            set_tf32(None)  # torch's defaults (cuDNN TF32 on): our float32 must be exact all the same
            model = load_ours(name)
            call = model.score_windows
        for batch_size in BATCH_SIZES:
            batch = windows[:batch_size]
            with torch.inference_mode():
                try:
                    seconds = time_it(lambda: call(batch))
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    continue
            rate = batch_size / seconds
            rows.append({"precision": name, "window_batch": batch_size, "windows_per_s": rate,
                         # long audio has one window per second (1 s hop): windows/s is also x real time there
                         "x_real_time_long_audio": rate * 1.0, "x_real_time_7.68s_clips": rate * WINDOW / 16000})
            print(f"{name:>13} batch {batch_size:4d}: {rate:9.1f} windows/s  (x{rate:8.0f} real time on long audio)")
        if not name.startswith("original"):
            del model
        torch.cuda.empty_cache()
    set_tf32(None)


def deviation(results: dict, source: np.ndarray, original) -> None:
    import soundfile as sf

    from feature_extraction_distillmos import DistillMOSFeatureExtractor

    extractor = DistillMOSFeatureExtractor()
    clips = {}
    for path in sorted((ROOT / "tests" / "data").glob("*/audio/**/*.wav")):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        clips[path.name] = extractor.prepare_clip(audio[:, 0], rate)
    for index, seconds in enumerate(LENGTHS_S):
        clips[f"synthetic_{seconds}s"] = np.resize(np.roll(source, -index * 51_111), int(seconds * 16000))

    set_tf32(False)  # the reference: the original in exact float32
    with torch.inference_mode():
        reference = {k: float(original(torch.from_numpy(v)[None].cuda())) for k, v in clips.items()}
    results["deviation"] = {}
    for name in DTYPES:
        set_tf32(None)
        model = load_ours(name)
        with torch.inference_mode():
            ours = {k: float(model(torch.from_numpy(v)[None].cuda()).mos) for k, v in clips.items()}
        delta = np.array([abs(ours[k] - reference[k]) for k in clips])
        pcc = float(np.corrcoef([ours[k] for k in clips], [reference[k] for k in clips])[0, 1])
        results["deviation"][name] = {"mean_abs": float(delta.mean()), "max_abs": float(delta.max()), "pcc": pcc,
                                      "clips": len(clips)}
        print(f"{name:>13} vs original (float32): mean |dMOS| {delta.mean():.2e}, max {delta.max():.2e}, PCC {pcc:.6f}")
        del model
    set_tf32(None)


def end_to_end(results: dict, original, clips: int) -> None:
    import soundfile as sf
    import torchaudio

    from distill_mos import DistillMOSScorer

    with tempfile.TemporaryDirectory() as folder:
        audio_seconds = make_folder(Path(folder), clips)
        paths = sorted(Path(folder).glob("*.wav"))
        rows = results["end_to_end"] = {"clips": clips, "audio_seconds": audio_seconds}

        def original_cli() -> list[float]:  # distillmos.sqa._infer_file_list, with soundfile in place of torchaudio.load
            scores = []
            for path in paths:
                audio, rate = sf.read(path, dtype="float32", always_2d=True)
                x = torch.from_numpy(audio.T[:1].copy())
                if rate != 16000:
                    x = torchaudio.transforms.Resample(rate, 16000)(x)
                with torch.no_grad():
                    scores.append(original(x.cuda()).item())
            return scores

        runs = [("original", original_cli)]
        for name in ("float32", "float16"):
            scorer = DistillMOSScorer.from_pretrained(str(ROOT), device="cuda", dtype=name, batch_size=16)
            runs.append((name, lambda scorer=scorer: [r.mos for r in scorer.score_files(paths)]))
        scores = {}
        for name, run in runs:
            set_tf32(False if name == "original" else None)
            run()  # warm-up: cuDNN kernel choice, resampler kernels
            torch.cuda.synchronize()
            start = time.perf_counter()
            scores[name] = run()
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            rows[name] = {"seconds": seconds, "x_real_time": audio_seconds / seconds}
            print(f"{name:>13}: {clips} clips ({audio_seconds:.0f} s of audio) in {seconds:.2f} s = x{audio_seconds / seconds:.0f} real time")
        for name in ("float32", "float16"):
            delta = np.abs(np.array(scores[name]) - np.array(scores["original"]))
            rows[name]["speedup_vs_original"] = rows["original"]["seconds"] / rows[name]["seconds"]
            rows[name]["max_abs_dmos"] = float(delta.max())
            print(f"{name:>13}: x{rows[name]['speedup_vs_original']:.2f} the original, max |dMOS| {delta.max():.2e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    parser.add_argument("--clips", type=int, default=100)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return 2
    import distillmos

    properties = torch.cuda.get_device_properties(0)
    results = {"gpu": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
               "memory_gb": round(properties.total_memory / 1e9, 1), "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine()}
    print(json.dumps(results))
    source = speech_source()
    original = distillmos.ConvTransformerSQAModel().cuda().eval()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for section in (throughput, deviation, profile_single_window):
        section(results, source, original)
        args.output.write_text(json.dumps(results, indent=2))  # after each section: a later failure keeps these
    end_to_end(results, original, args.clips)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
