#!/usr/bin/env python
"""
Peak memory of scoring long compressed audio (issue 23): 48 kHz mono Opus and FLAC made with FFmpeg's lavfi (a 220 Hz
tone with a little noise), scored by `distill-mos` in a child process whose memory is sampled every 50 ms from
/proc (RSS, and its anonymous and file-backed parts) and read from wait4 (ru_maxrss, the kernel's peak RSS).

Modes per case: `exact` (the model's 1 s hop), `hop` (`--window-hop 7.68`, the fast mode), `decode` (only
`load_resampled`: decoding and resampling to the 16 kHz spill file, what scoring adds to the model's own memory),
`before` (what the code did before issue 23: `load_audio` of the whole file, then one torchaudio resample; only for
short cases, it grows by ~6 GB per hour).

    python bench/memory_benchmark.py                                  # the default cases below
    python bench/memory_benchmark.py --cases opus:600:exact flac:3600:hop --audio-dir /tmp/long_audio
    python bench/record_results.py memory_amd_epyc -- python bench/memory_benchmark.py

The spill file lives in $DISTILL_MOS_SPILL_DIR (default: the temporary folder); its pages, once read by the model,
count as file-backed RSS (page cache the kernel can drop under pressure), so both parts are reported.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = [
    "opus:600:before", "opus:600:exact", "flac:600:exact",
    "opus:3600:hop", "flac:3600:hop",
    "opus:14400:decode", "flac:14400:decode", "opus:14400:hop", "flac:14400:hop",
]
CODECS = {"opus": ["-c:a", "libopus", "-b:a", "24k"], "flac": ["-c:a", "flac", "-sample_fmt", "s16"]}
DECODE = "import sys; from distill_mos.audio import load_resampled; print(len(load_resampled(sys.argv[1]).waveform))"
BEFORE = (
    "import sys; from distill_mos.audio import load_audio; from feature_extraction_distillmos import resample; "
    "a = load_audio(sys.argv[1]); print(len(resample(a.waveform, a.sampling_rate, 16000)))"
)


def make_audio(folder: Path, codec: str, seconds: int) -> Path:
    path = folder / f"tone_{seconds}s_48k.{codec}"
    if not path.exists():
        source = f"sine=frequency=220:sample_rate=48000:duration={seconds},volume=0.3"
        noise = f"anoisesrc=sample_rate=48000:amplitude=0.02:duration={seconds}"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-f", "lavfi", "-i", noise,
             "-filter_complex", "amix=inputs=2:normalize=0", "-ac", "1", *CODECS[codec], str(path)],
            check=True,
        )
    return path


def _status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem of `pid` in kB (empty once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0])
    return fields


def measure(command: list[str], env: dict) -> dict:
    """Runs `command`; -> peak RSS (wait4) and sampled peaks of its parts, in MB, CPU seconds, wall seconds."""
    started = time.time()
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            for key, value in _status(child.pid).items():
                peaks[key] = max(peaks[key], value)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = child.stdout.read()
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    return {
        "exit_status": child.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "sampled_peak_rss_mb": round(peaks["VmRSS"] / 1024, 1),
        "sampled_peak_anon_mb": round(peaks["RssAnon"] / 1024, 1),
        "sampled_peak_file_mb": round(peaks["RssFile"] / 1024, 1),
        "sampled_peak_shmem_mb": round(peaks["RssShmem"] / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "wall_s": round(time.time() - started, 1),
        "stdout_tail": out.decode(errors="replace")[-300:],
        "stderr_tail": err.decode(errors="replace")[-300:],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="CODEC:SECONDS:MODE (modes: exact, hop, decode, before)")
    parser.add_argument("--audio-dir", type=Path, default=None, help="where the generated audio is kept (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        audio_dir = args.audio_dir or Path(scratch)
        audio_dir.mkdir(parents=True, exist_ok=True)
        for case in args.cases:
            codec, seconds, mode = case.split(":")
            path = make_audio(audio_dir, codec, int(seconds))
            out = Path(scratch) / "scores.csv"
            out.unlink(missing_ok=True)
            if mode in ("exact", "hop"):
                command = [sys.executable, "-m", "distill_mos.cli", str(path), "-o", str(out), "--no-progress",
                           "--device", "cpu"] + (["--window-hop", "7.68"] if mode == "hop" else [])
            else:
                command = [sys.executable, "-c", DECODE if mode == "decode" else BEFORE, str(path)]
            figures = measure(command, env)
            if out.exists():
                figures["csv"] = out.read_text().splitlines()[1:]
            row = {"case": case, "codec": codec, "seconds": int(seconds), "mode": mode,
                   "file_mb": round(path.stat().st_size / 1e6, 2), **figures}
            results.append(row)
            print(f"{case:>20}: exit {row['exit_status']}, peak RSS {row['peak_rss_mb']:7.1f} MB (anonymous "
                  f"{row['sampled_peak_anon_mb']:7.1f} MB, file-backed {row['sampled_peak_file_mb']:7.1f} MB), "
                  f"{row['cpu_s']:7.1f} CPU s, {row['wall_s']:7.1f} s, file {row['file_mb']} MB", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cases": results}, indent=1) + "\n")
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
