"""`distill-mos --stream SOURCE` (issue 18 §2, §4): JSON lines per hop from stdin WAV, raw PCM, files and FFmpeg."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from conftest import ROOT

CLIP = sorted(glob.glob(str(ROOT / "tests" / "data" / "tcdvoip" / "audio" / "**" / "*.wav"), recursive=True))[0]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def run(args, stdin=None, timeout=180):
    done = subprocess.run(
        [sys.executable, "-m", "distill_mos.cli", *args], input=stdin, capture_output=True, env=ENV,
        timeout=timeout, cwd=ROOT,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.decode().splitlines()], done.stderr.decode()


def start(args):
    return subprocess.Popen(
        [sys.executable, "-m", "distill_mos.cli", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=ENV, cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even if the test runner ignores SIGINT
    )


def test_wav_on_stdin_gives_a_line_per_hop_and_a_summary_with_the_models_window_scores(scorer):
    code, lines, stderr = run(["--stream", "-", "--hop", "2"], stdin=open(CLIP, "rb").read())
    assert code == 0, stderr
    *updates, summary = lines
    assert [u["end"] for u in updates] == [2.0, 4.0, 6.0, 7.68]  # 8.05 s: short-clip updates, then one window
    assert summary["summary"] is True and summary["error"] is None and summary["sampling_rate"] == 48000
    x = soundfile.read(CLIP, dtype="float32", always_2d=True)[0][:, 0]
    (window,) = scorer.score_prepared([scorer.prepare(x, 48000)[:122880]])
    assert updates[-1]["score"] == pytest.approx(window.mos, abs=1e-5) == summary["mos"]


def test_raw_pcm_on_stdin_and_a_stream_that_stops_mid_sample(scorer):
    x = soundfile.read(CLIP, dtype="int16", always_2d=True)[0][: 3 * 48000, 0]
    code, lines, stderr = run(
        ["--stream", "-", "--input-format", "s16le", "--input-rate", "48000", "--input-channels", "1"],
        stdin=x.tobytes() + b"\x01",  # half a sample at the end
    )
    assert code == 0 and "stopped mid-sample (1 byte(s)" in stderr
    assert [u["end"] for u in lines[:-1]] == [1.0, 2.0, 3.0]
    assert lines[-1]["mos"] == pytest.approx(scorer.score_array(x, 48000).mos, abs=1e-5)  # under 7.68 s: the clip's score


def test_file_and_ffmpeg_sources(tmp_path):
    code, lines, _ = run(["--stream", CLIP, "--hop", "4"])
    assert code == 0 and [u["end"] for u in lines[:-1]] == [4.0, 7.68]
    webm = tmp_path / "call.webm"
    subprocess.run(["ffmpeg", "-v", "error", "-i", CLIP, "-t", "2.5", "-c:a", "libopus", str(webm)], check=True)
    code, lines, _ = run(["--stream", str(webm)])
    assert code == 0 and [u["end"] for u in lines[:-1]] == [1.0, 2.0] and lines[-1]["duration"] == pytest.approx(2.5, abs=0.03)


def test_a_source_ffmpeg_cannot_open_is_one_line(tmp_path):
    code, lines, stderr = run(["--stream", str(tmp_path / "missing.webm")])
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("distill-mos --stream: FFmpeg cannot open")
    assert lines[-1]["error"].startswith("FFmpeg cannot open") and lines[-1]["mos"] is None


def test_a_source_that_never_sends_times_out():
    process = start(["--stream", "-", "--input-format", "s16le", "--input-rate", "16000", "--timeout", "3"])
    try:
        assert process.wait(180) == 1  # stdin stays open, nothing arrives
    finally:
        process.kill()
    summary = json.loads(process.stdout.read().decode().splitlines()[-1])
    assert summary["error"] == "no audio from - for 3 s: ending the stream" and summary["duration"] == 0
    process.stdin.close()


def test_sigint_and_a_closed_pipe_end_cleanly():
    x = (0.1 * np.sin(np.arange(48000 * 3) / 5)).astype("<f4")
    process = start(["--stream", "-", "--input-format", "f32le", "--input-rate", "48000", "--timeout", "120"])
    process.stdin.write(x.tobytes())
    process.stdin.flush()
    first = json.loads(process.stdout.readline())  # flushed at once, while the input is still open
    assert first["end"] == 1.0
    silent_for = time.time() + 20
    while time.time() < silent_for and process.poll() is None:
        line = json.loads(process.stdout.readline())
        if line["end"] == 2.0:
            break
    process.send_signal(signal.SIGINT)
    rest = [json.loads(line) for line in process.stdout.read().decode().splitlines()]
    assert process.wait(60) == 130
    assert rest[-1]["summary"] is True and rest[-1]["interrupted"] is True
    assert "Traceback" not in process.stderr.read().decode()
    # a reader that goes away (`| head -1`): no traceback, exit 0
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m distill_mos.cli --stream {CLIP} | head -1"], capture_output=True, env=ENV,
        timeout=180, cwd=ROOT,
    )
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1 and b"Traceback" not in done.stderr


def test_stream_help_answers_with_the_usage(capsys):
    from distill_mos.cli import dispatch

    assert dispatch(["--stream", "--help"]) == 0  # not "--stream: expected one argument"
    assert capsys.readouterr().out.startswith("usage: distill-mos --stream")
