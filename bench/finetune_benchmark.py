#!/usr/bin/env python
"""
Fine-tuning settings on a synthetic listening test built from the bundled speech (issue 22).

    python bench/finetune_benchmark.py                                   # released, new defaults, old defaults
    python bench/finetune_benchmark.py --settings lr3e-5 lr3e-4 steps300 steps1200 --seeds 0 1
    python bench/finetune_benchmark.py --settings search                 # the nested --search (~14.5x the steps)
    python bench/record_results.py finetune_defaults_amd_epyc -- python bench/finetune_benchmark.py

The test: 16 stimuli (the 4 clean-ish bundled recordings, GenSpeech dir1/dir3 references and TCD-VoIP C_01/C_21,
each cut into 4 non-overlapping parts of 1.75-2.05 s), each under 8 conditions drawn from a pool of graded
degradations (Opus, MP3, AAC, Speex and GSM through FFmpeg at several bitrates, white noise at several SNRs,
packet loss, band limits, and some combinations): 128 files. Their "ratings" are wide-band PESQ (the `pesq`
package, ITU-T P.862.2) against the clean part, mapped linearly from PESQ's 1.04..4.64 onto 1..5. These labels are
only for choosing settings: no figure reported for a user's test comes from them.

Every setting is scored by 5-fold cross-validation grouped by stimulus (the library's `cross_validate`, on
features cached once), and the table gives its out-of-fold PCC / SRCC beside the released model's, with the spread
over seeds (the seed moves the folds, the data order and the initial steps). CPU seconds per setting are printed:
the machine is shared, so wall time says little.
"""

import argparse
import concurrent.futures
import csv
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOURCES = (  # (path, group name): recordings without strong degradations, each a different sentence
    ("tests/data/genspeech/audio/LPCNet_listening_test/mfall/dir1/ref.wav", "gs1"),
    ("tests/data/genspeech/audio/LPCNet_listening_test/mfall/dir3/ref.wav", "gs3"),
    ("tests/data/tcdvoip/audio/Test_Set/NOISE/C_01_NOISE_MK.wav", "tcd01"),
    ("tests/data/tcdvoip/audio/Test_Set/NOISE/C_21_NOISE_MK.wav", "tcd21"),
)
PARTS_PER_SOURCE = 4
CONDITIONS_PER_STIMULUS = 8
RATE = 16000
PESQ_RANGE = (1.04, 4.64)  # wide-band PESQ's MOS-LQO range

# Condition pool: name -> list of steps, each ("codec", ffmpeg encoder args, container) / ("noise", snr_db) /
# ("loss", fraction of 20 ms frames zeroed) / ("lowpass", hz) / ("narrowband",).
CONDITIONS = {
    "opus6k": [("codec", ["-c:a", "libopus", "-b:a", "6k"], "ogg")],
    "opus9k": [("codec", ["-c:a", "libopus", "-b:a", "9k"], "ogg")],
    "opus12k": [("codec", ["-c:a", "libopus", "-b:a", "12k"], "ogg")],
    "opus20k": [("codec", ["-c:a", "libopus", "-b:a", "20k"], "ogg")],
    "mp3_8k": [("codec", ["-c:a", "libmp3lame", "-b:a", "8k"], "mp3")],
    "mp3_16k": [("codec", ["-c:a", "libmp3lame", "-b:a", "16k"], "mp3")],
    "mp3_32k": [("codec", ["-c:a", "libmp3lame", "-b:a", "32k"], "mp3")],
    "aac12k": [("codec", ["-c:a", "aac", "-b:a", "12k"], "m4a")],
    "aac24k": [("codec", ["-c:a", "aac", "-b:a", "24k"], "m4a")],
    "speex_nb": [("narrowband",), ("codec", ["-c:a", "libspeex", "-ar", "8000"], "ogg")],
    "gsm": [("codec", ["-c:a", "libgsm", "-ar", "8000"], "gsm")],
    "noise0": [("noise", 0)],
    "noise5": [("noise", 5)],
    "noise10": [("noise", 10)],
    "noise20": [("noise", 20)],
    "loss5": [("loss", 0.05)],
    "loss15": [("loss", 0.15)],
    "loss30": [("loss", 0.30)],
    "lowpass2k": [("lowpass", 2000)],
    "narrowband": [("narrowband",)],
    "lowpass5k": [("lowpass", 5000)],
    "opus12k_loss10": [("codec", ["-c:a", "libopus", "-b:a", "12k"], "ogg"), ("loss", 0.10)],
    "noise15_narrowband": [("noise", 15), ("narrowband",)],
    "mp3_16k_noise20": [("noise", 20), ("codec", ["-c:a", "libmp3lame", "-b:a", "16k"], "mp3")],
}

# Settings compared (overrides of FinetuneSettings). "old defaults" are the library's settings before issue 22.
SETTINGS = {
    "new defaults": {},
    "old defaults": {"learning_rate": 3e-5, "epochs": 15, "batch_size": 8, "validation_fraction": 0.15},
    "lr3e-5": {"learning_rate": 3e-5},
    "lr3e-4": {"learning_rate": 3e-4},
    "steps300": {"steps": 300},
    "steps1200": {"steps": 1200},
    "batch4": {"batch_size": 4, "steps": 150},  # the same clips seen as the defaults' 600 steps of 1
    "warmup0": {"warmup": 0.0},
    "last layer": {"train_layers": "last"},
    "pooling only": {"train_layers": "pooling"},
    "validation 0.15": {"validation_fraction": 0.15},
    "window loss": {"loss": "window"},
    "search": {"search": True},
}
DEFAULT_RUN = ("new defaults", "old defaults")


# --- the synthetic listening test ---------------------------------------------------------------------------------


def _ffmpeg_roundtrip(waveform: np.ndarray, encoder_args: list[str], container: str, work: Path) -> np.ndarray:
    import soundfile

    source, coded, decoded = work / "in.wav", work / f"coded.{container}", work / "out.wav"
    soundfile.write(source, waveform, RATE, subtype="FLOAT")
    for command in (["ffmpeg", "-y", "-loglevel", "error", "-i", str(source), *encoder_args, str(coded)],
                    ["ffmpeg", "-y", "-loglevel", "error", "-i", str(coded), "-ar", str(RATE), "-ac", "1",
                     "-c:a", "pcm_f32le", str(decoded)]):
        subprocess.run(command, check=True)
    out, _ = soundfile.read(decoded, dtype="float32")
    return out


def degrade(waveform: np.ndarray, steps: list[tuple], rng: np.random.Generator, work: Path) -> np.ndarray:
    """(samples,) 16 kHz float32 -> the same length, through the condition's steps in order."""
    import torch
    import torchaudio

    out = waveform.astype(np.float32)
    for step in steps:
        kind = step[0]
        if kind == "codec":
            coded = _ffmpeg_roundtrip(out, step[1], step[2], work)
            # codecs add a few ms of delay and padding: PESQ aligns in time; keep the length the reference has
            out = np.pad(coded, (0, max(0, len(out) - len(coded))))[: len(out)]
        elif kind == "noise":
            noise = rng.standard_normal(len(out)).astype(np.float32)
            power = np.mean(out**2)
            out = out + noise * np.sqrt(power / 10 ** (step[1] / 10))
        elif kind == "loss":
            frame = RATE // 50  # 20 ms packets, lost ones zeroed (no concealment)
            out = out.copy()
            for start in range(0, len(out), frame):
                if rng.random() < step[1]:
                    out[start : start + frame] = 0
        elif kind == "lowpass":
            out = torchaudio.functional.lowpass_biquad(torch.from_numpy(out), RATE, step[1]).numpy()
        elif kind == "narrowband":  # through 8 kHz and back: 4 kHz band limit
            narrow = torchaudio.functional.resample(torch.from_numpy(out), RATE, 8000)
            out = torchaudio.functional.resample(narrow, 8000, RATE).numpy()[: len(out)]
    peak = np.abs(out).max()
    return (out / peak * 0.9 if peak > 0.99 else out).astype(np.float32)


def build_listening_test(folder: Path, seed: int = 0) -> Path:
    """Writes `folder`/labels.csv (file, mos, stimulus, condition, pesq) and the 128 degraded files; returns the CSV."""
    import soundfile
    import torch
    import torchaudio
    from pesq import pesq

    labels = folder / "labels.csv"
    if labels.is_file():
        return labels
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as work:
        for path, name in SOURCES:
            audio, rate = soundfile.read(ROOT / path, dtype="float32", always_2d=True)
            speech = torchaudio.functional.resample(torch.from_numpy(audio[:, 0]), rate, RATE).numpy()
            length = len(speech) // PARTS_PER_SOURCE
            for part in range(PARTS_PER_SOURCE):
                clean = speech[part * length : (part + 1) * length]
                clean = clean / np.abs(clean).max() * 0.5
                stimulus = f"{name}_{part}"
                for condition in pick.sample(sorted(CONDITIONS), CONDITIONS_PER_STIMULUS):
                    degraded = degrade(clean, CONDITIONS[condition], rng, Path(work))
                    score = float(pesq(RATE, clean, degraded, "wb"))
                    mos = 1 + 4 * (min(max(score, PESQ_RANGE[0]), PESQ_RANGE[1]) - PESQ_RANGE[0]) / (
                        PESQ_RANGE[1] - PESQ_RANGE[0])
                    file = f"{stimulus}_{condition}.wav"
                    soundfile.write(folder / file, degraded, RATE, subtype="PCM_16")
                    rows.append({"file": file, "mos": round(mos, 4), "stimulus": stimulus, "condition": condition,
                                 "pesq": round(score, 4)})
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return labels


# --- the comparison -------------------------------------------------------------------------------------------------


def _figures(predictions, labels) -> tuple[float, float]:
    from scipy import stats

    return float(stats.pearsonr(predictions, labels)[0]), float(stats.spearmanr(predictions, labels)[0])


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} ({min(values):.3f}-{max(values):.3f})"


def _cross_validate_job(cache: str, folds: int, threads: int, job: tuple[str, int]) -> dict:
    """One setting and seed: grouped cross-validation on the cached clips, in this process, on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    from distill_mos.finetune import FinetuneSettings
    from distill_mos.finetune.training import cross_validate
    from modeling_distillmos import DistillMOSModel

    name, seed = job
    model = DistillMOSModel.from_pretrained(str(ROOT)).eval()
    clips = torch.load(cache, weights_only=False)
    targets = [c.clip.target for c in clips]
    settings = replace(FinetuneSettings(), seed=seed, **SETTINGS[name])
    cpu, started = time.process_time(), time.time()
    result = cross_validate(model, clips, folds, settings, verbose=False)
    cpu_s, wall_s = time.process_time() - cpu, time.time() - started
    pcc, srcc = _figures(result.predictions, targets)
    return {"seed": seed, "pcc": pcc, "srcc": srcc, "released_pcc": _figures(result.baseline, targets)[0],
            "cpu_s": round(cpu_s, 1), "wall_s": round(wall_s, 1),
            "optimizer_steps": sum(fold["steps_run"] for fold in result.folds),
            "searched": [fold["search"]["chosen"] for fold in result.folds if fold.get("search")]}


def _search_cost(args, model, clips) -> int:
    """`fit` with `--search` on the training part of outer fold 1: the nested search's cost per outer fold."""
    from distill_mos.finetune import FinetuneSettings
    from distill_mos.finetune.data import grouped_folds
    from distill_mos.finetune.training import clip_groups, fit

    settings = replace(FinetuneSettings(), seed=args.seeds[0], search=True)
    held = set(grouped_folds(clip_groups(clips), args.folds, settings.seed)[0])
    rest = [clip for i, clip in enumerate(clips) if i not in held]
    cpu, started = time.process_time(), time.time()
    run = fit(model, rest, settings, verbose=False, measure_loss=False)
    cpu_s, wall_s = time.process_time() - cpu, time.time() - started
    inner = len(run.search["candidates"]) * run.search["inner_folds"]
    figures = {"n": len(clips), "n_train": len(rest), "folds": args.folds, "inner_runs": inner,
               "chosen": run.search["chosen"], "candidates": run.search["candidates"], "cpu_s": round(cpu_s, 1),
               "wall_s": round(wall_s, 1), "whole_cv_cpu_s": round(cpu_s * args.folds, 1)}
    print(f"--search on the {len(rest)} training files of outer fold 1 of {args.folds}: {inner} inner runs and the "
          f"final one in {cpu_s:.0f} CPU s ({wall_s:.0f} s wall, torch threads {args.threads or 'default'}); chose "
          f"{run.search['chosen']}. A whole --cv {args.folds} --search run: about {cpu_s * args.folds:.0f} CPU s, "
          f"{cpu_s * args.folds / 2 / 60:.0f} min on 2 cores at one fold per core")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def _cv_wall(args) -> int:
    """The user's command, end to end, with torch's default threads: `--cv K` on the 128 files."""
    labels_csv = build_listening_test(args.data)
    with tempfile.TemporaryDirectory(prefix="distill-mos-cv-wall-") as out:
        command = [sys.executable, "-m", "distill_mos.finetune", "--labels", str(labels_csv), "--group-column",
                   "stimulus", "--cv", str(args.folds), "--output-dir", out, "--quiet"]
        started, before = time.time(), os.times()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall_s, after = time.time() - started, os.times()
        cpu_s = (after.children_user + after.children_system) - (before.children_user + before.children_system)
        results = json.loads((Path(out) / "results.json").read_text()) if done.returncode == 0 else {}
    print(done.stdout.strip())
    print(f"python -m distill_mos.finetune --cv {args.folds} on {results.get('n')} files: exit {done.returncode}, "
          f"{wall_s:.0f} s wall ({wall_s / 60:.1f} min), {cpu_s:.0f} CPU s; out-of-fold PCC "
          f"{results.get('cv', {}).get('pcc')}")
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1), "exit": done.returncode,
                                         "n": results.get("n"), "cv": results.get("cv"),
                                         "baseline": results.get("baseline")}, indent=1) + "\n")
    return done.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_RUN), choices=list(SETTINGS),
                        help="settings to compare (default: the new and the old defaults)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "distill-mos-finetune-bench",
                        help="where the synthetic test is written (reused when it exists)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--spread", nargs="*", default=["new defaults", "old defaults"], choices=list(SETTINGS),
                        help="settings run with every --seeds seed (the others with the first seed only)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs side by side, each a process with --threads torch threads (default 1 run)")
    parser.add_argument("--search-cost", action="store_true",
                        help="instead of the table: the CPU time of --search in one outer fold (the training part of "
                             "fold 1 of --folds), and what a whole --cv --search run costs at that rate")
    parser.add_argument("--cv-wall", action="store_true",
                        help="instead of the table: time the whole command `python -m distill_mos.finetune --cv "
                             "--folds` on the test as a user runs it (decoding and features included, torch's threads)")
    parser.add_argument("--json", type=Path, help="write the figures here (bench/record_results.py)")
    args = parser.parse_args(argv)
    if args.cv_wall:
        return _cv_wall(args)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from distill_mos.finetune import FinetuneSettings, load_labels
    from distill_mos.finetune.model import prepare_clips
    from distill_mos.finetune.model import DistillMOSClipRegressor, predict
    from feature_extraction_distillmos import DistillMOSFeatureExtractor
    from modeling_distillmos import DistillMOSModel

    cpu, wall = time.process_time(), time.time()
    labels_csv = build_listening_test(args.data)
    built_s = time.process_time() - cpu
    model = DistillMOSModel.from_pretrained(str(ROOT)).eval()
    extractor = DistillMOSFeatureExtractor.from_pretrained(str(ROOT))
    labelled = load_labels(labels_csv, group_column="stimulus")
    cpu = time.process_time()
    cache = args.data / "features.pt"  # the conv features of the released model, reused by later runs
    if cache.is_file():
        clips, issues = torch.load(cache, weights_only=False), []
    else:
        clips, issues = prepare_clips(model, extractor, labelled.clips)
        if not issues:
            torch.save(clips, cache)
    features_s = time.process_time() - cpu
    if issues or len(clips) < 10:
        print("\n".join(map(str, issues)), file=sys.stderr)
        return 1
    import soundfile

    seconds = [soundfile.info(c.clip.audio).duration for c in clips]
    windows = sum(c.inputs.shape[0] for c in clips)
    targets = [c.clip.target for c in clips]
    print(f"{len(clips)} files of {min(seconds):.2f}-{max(seconds):.2f} s ({windows} windows), "
          f"{len({c.clip.group for c in clips})} stimuli; PESQ-derived MOS {min(targets):.2f}-{max(targets):.2f}; "
          f"features cached in {features_s:.0f} CPU s; torch threads {torch.get_num_threads()}", flush=True)

    if args.search_cost:
        return _search_cost(args, model, clips)
    figures = {"n": len(clips), "folds": args.folds, "seeds": args.seeds, "settings": {},
               "cost": {"build_cpu_s": round(built_s, 1), "features_cpu_s": round(features_s, 1)}}
    released = _figures(predict(DistillMOSClipRegressor(model), clips), targets)
    jobs = []
    for name in args.settings:
        if name == "window loss" and windows == len(clips):
            print(f"{name}: the same as the clip loss by construction (every file is one window); not run")
            figures["settings"][name] = {"same_as": "new defaults", "reason": "every file is one window"}
            continue
        jobs += [(name, seed) for seed in (args.seeds if name in args.spread else args.seeds[:1])]
    # Each run is a process of its own with one torch thread: two runs side by side use two cores better than one
    # run on two threads (no barrier waits on a shared machine), and CPU seconds stay each run's own.
    run_job = partial(_cross_validate_job, str(cache), args.folds, args.threads or 1)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):  # each run's line as soon as it ends
            (name, seed), run = futures[future], future.result()
            print(f"  {name}, seed {seed}: out-of-fold PCC {run['pcc']:.3f}, SRCC {run['srcc']:.3f}; "
                  f"{run['optimizer_steps']} steps in {run['cpu_s']:.0f} CPU s ({run['wall_s']:.0f} s wall)",
                  flush=True)
            entry = figures["settings"].setdefault(name, {"overrides": SETTINGS[name], "settings": asdict(replace(
                FinetuneSettings(), **SETTINGS[name])), "runs": []})
            entry["runs"].append(run)
            if args.json:  # what has finished so far, in case the run is cut short
                args.json.write_text(json.dumps(figures, indent=1) + "\n")
    for entry in figures["settings"].values():
        entry.get("runs", []).sort(key=lambda run: run["seed"])
    figures["settings"] = {name: figures["settings"][name] for name in args.settings if name in figures["settings"]}

    print()
    print(f"{'setting':18} {'out-of-fold PCC':34} {'SRCC':34} {'CPU s / run':>11}")
    print(f"{'released model':18} {released[0]:<34.3f} {released[1]:<34.3f}")
    figures["released"] = {"pcc": released[0], "srcc": released[1]}
    for name, entry in figures["settings"].items():
        if "runs" not in entry:
            print(f"{name:18} = new defaults ({entry['reason']})")
            continue
        runs = entry["runs"]
        print(f"{name:18} {_spread([r['pcc'] for r in runs]):34} {_spread([r['srcc'] for r in runs]):34} "
              f"{np.mean([r['cpu_s'] for r in runs]):>11.0f}")
    figures["total_wall_s"] = round(time.time() - wall, 1)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
