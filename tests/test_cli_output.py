"""
The command line tool under real use (issue 11, points 6-8; issue 10, point 4): start-up without torch, output
problems without tracebacks, a `warning` column, and one row for every path found, openable or not.
"""

import csv
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import GENSPEECH, ROOT

from distill_mos.audio import SHORT_CLIP_WARNING, SILENT_WARNING, TRUNCATED_WARNING, load_audio, probe_duration
from distill_mos.cli import main

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
# The installed console script next to this interpreter (not whatever `distill-mos` PATH finds first).
CONSOLE = Path(sys.executable).parent / "distill-mos"


def cli(*argv, **kwargs) -> subprocess.CompletedProcess:
    command = [str(CONSOLE)] if CONSOLE.exists() else [sys.executable, "-m", "distill_mos.cli"]
    return subprocess.run([*command, *map(str, argv)], capture_output=True, text=True, cwd=ROOT, **kwargs)


def rows_of(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- point 6: start-up ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, code, text",
    [
        (["--help"], 0, "--window-hop"),
        (["--version"], 0, "distill-mos 1."),
        (["--batch-size", "0", str(DIR3)], 2, "--batch-size must be at least 1"),
        (["--format", "xml", str(DIR3)], 2, "invalid choice"),
        ([], 2, "give audio files"),
        ([str(DIR3), "-o", "/nonexistent/folder/out.csv"], 2, "output folder does not exist"),
    ],
)
def test_help_version_and_argument_errors_never_import_torch(argv, code, text):
    """Answered before torch is imported (torch costs seconds of CPU at start-up); -X importtime lists every import."""
    done = cli(*argv, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == code, done.stderr[-2000:]
    assert text in done.stdout + done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert imported, "no import timing on stderr"
    heavy = sorted(imported & {"torch", "transformers", "torchaudio", "ray", "datasets", "soundfile"})
    assert not heavy, f"imported before answering: {heavy}"


# --- point 7: output problems ---------------------------------------------------------------------------------------


def test_output_naming_a_directory_is_a_clear_error(tmp_path):
    done = cli(DIR3 / "ref.wav", "-o", tmp_path, "--overwrite")
    assert done.returncode == 2
    assert "is a directory" in done.stderr and "Traceback" not in done.stderr


def test_full_disk_is_a_clear_error_without_traceback():
    done = cli(DIR3 / "ref.wav", "-o", "/dev/full")
    assert done.returncode == 2
    assert "cannot write /dev/full: No space left on device" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_write_failure_leaves_no_output_that_looks_complete(tmp_path):
    """A file-size limit makes the 2nd row's write fail (as a full disk would): no scores.csv may appear."""
    out = tmp_path / "scores.csv"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (150, 150))

    done = cli(DIR3 / "ref.wav", DIR3 / "speex.wav", DIR3 / "melp.wav", "-o", out, "--batch-size", "1",
               preexec_fn=limit_file_size)
    assert done.returncode == 2, done.stderr
    assert "cannot write" in done.stderr and "File too large" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()  # only scores.csv.partial, which says what it is
    assert (tmp_path / "scores.csv.partial").exists()


def test_closed_pipe_exits_quietly():
    script = f'"{CONSOLE}" "{DIR3}" --no-progress | head -1; exit ${{PIPESTATUS[0]}}'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout == "file,mos,duration_s,sampling_rate,channels,error,warning\n"
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_the_output_file_appears_only_when_complete(tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main([str(DIR3 / "ref.wav"), "-o", str(out)]) == 0
    assert len(rows_of(out)) == 1 and not (tmp_path / "scores.csv.partial").exists()
    # a leftover .partial from an interrupted run is neither overwritten silently nor ignored
    (tmp_path / "next.csv.partial").write_text("file,mos\n")
    assert main([str(DIR3 / "ref.wav"), "-o", str(tmp_path / "next.csv")]) == 2
    assert "--resume" in capsys.readouterr().err


# --- point 8: warnings travel with the results ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd")
    speech = soundfile.read(DIR3 / "opus.wav", dtype="float32")[0]
    soundfile.write(folder / "silent.wav", np.zeros(16000 * 2, np.float32), 16000)
    soundfile.write(folder / "short.wav", speech[:8000], 16000)  # 0.5 s
    # a WAV whose header claims 7.8 s but that holds 500 samples (issue 11's example)
    (folder / "truncated.wav").write_bytes((DIR3 / "opus.wav").read_bytes()[:44 + 1000])
    # a FLAC written to a pipe: no length in its header (libsndfile reports 2**63 - 1 frames)
    flac = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(DIR3 / "opus.wav"), "-f", "flac", "-"],
                          capture_output=True, check=True).stdout
    (folder / "nolength.flac").write_bytes(flac)
    return folder


def test_warning_wording_is_shared():
    from feature_extraction_distillmos import SILENT_MESSAGE

    assert SILENT_WARNING == f"audio {SILENT_MESSAGE}"  # the API's and the Space's silent-clip sentence
    assert "{duration" in SHORT_CLIP_WARNING and "{declared" in TRUNCATED_WARNING


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_warning_column(odd_files, tmp_path, scorer, capsys, suffix):
    out = tmp_path / f"scores{suffix}"
    names = ["silent.wav", "short.wav", "truncated.wav", "nolength.flac"]
    code = main([*(str(odd_files / n) for n in names), str(DIR3 / "opus.wav"), "-o", str(out), "--no-progress"])
    assert code == 0
    rows = {Path(r["file"]).name: r for r in rows_of(out)}
    assert list(next(iter(rows.values())))[-1] == "warning"
    empty = "" if suffix == ".csv" else None
    assert rows["silent.wav"]["warning"] == SILENT_WARNING
    assert rows["short.wav"]["warning"] == SHORT_CLIP_WARNING.format(duration=0.5, window=7.68)
    assert rows["truncated.wav"]["warning"] == TRUNCATED_WARNING.format(duration=500 / 16000, declared=7.8)
    assert float(rows["truncated.wav"]["mos"]) > 0  # still scored, but no longer silently
    assert rows["opus.wav"]["warning"] == empty
    # no length in the header: measured from the decoded audio, scored like the WAV it came from
    flac = rows["nolength.flac"]
    assert flac["error"] == empty and flac["warning"] == empty
    assert float(flac["duration_s"]) == pytest.approx(7.8)
    assert float(flac["mos"]) == pytest.approx(float(rows["opus.wav"]["mos"]), abs=1e-5)
    err = capsys.readouterr().err
    assert f"warning: {odd_files / 'truncated.wav'}: audio is much shorter than its header says" in err


def test_header_lengths_are_checked_but_not_trusted(odd_files):
    flac = load_audio(odd_files / "nolength.flac")
    assert flac.declared_duration is None and flac.duration == pytest.approx(7.8) and flac.warning is None
    truncated = load_audio(odd_files / "truncated.wav")
    assert truncated.declared_duration == pytest.approx(7.8) and truncated.waveform.shape == (500,)
    assert load_audio(DIR3 / "opus.wav").warning is None
    # before decoding (the Space's duration limit): "unknown", never 2**63 - 1 frames = 5.8e14 s
    assert probe_duration(odd_files / "nolength.flac") is None
    assert probe_duration(DIR3 / "opus.wav") == pytest.approx(7.8)


# --- issue 10, point 4: every path found yields a row ---------------------------------------------------------------


def test_entries_that_cannot_be_opened_get_error_rows(tmp_path, capsys):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    good = folder / "good.wav"
    good.write_bytes((DIR3 / "ref.wav").read_bytes())
    (folder / "dangling.wav").symlink_to(folder / "gone.wav")
    (folder / "loop.wav").symlink_to(folder / "loop.wav")
    os.mkfifo(folder / "sub" / "fifo.wav")  # would block a reader forever
    (folder / "sub" / "notes.txt").write_text("not audio, not listed")
    out = tmp_path / "scores.csv"
    code = main([str(folder), "-r", "-o", str(out), "--no-progress"])
    assert code == 1
    rows = {Path(r["file"]).name: r for r in rows_of(out)}
    assert sorted(rows) == ["dangling.wav", "fifo.wav", "good.wav", "loop.wav"]
    assert rows["good.wav"]["error"] == "" and float(rows["good.wav"]["mos"]) > 1
    assert rows["dangling.wav"]["error"].startswith("broken symbolic link")
    assert rows["loop.wav"]["error"].startswith("symbolic link loop")
    assert rows["fifo.wav"]["error"].startswith("is not a regular file")
    err = capsys.readouterr().err
    assert f"error: {folder / 'dangling.wav'}: broken symbolic link" in err


def test_unreadable_file_and_folder_get_error_rows(tmp_path, monkeypatch, capsys):
    """
    A file the user may not read and a folder that cannot be listed each get an error row. Permissions do not stop
    root (CI runs as root), so there the operating system's refusals are simulated at the two calls the CLI relies on
    (`os.access` for files, `os.scandir` for folders); as any other user the permissions are real.
    """
    folder = tmp_path / "corpus"
    (folder / "locked").mkdir(parents=True)
    (folder / "locked" / "inside.wav").write_bytes((DIR3 / "ref.wav").read_bytes())
    secret = folder / "secret.wav"
    secret.write_bytes((DIR3 / "ref.wav").read_bytes())
    if os.geteuid() == 0:
        real_access, real_scandir = os.access, os.scandir

        def access(path, mode, *args, **kwargs):
            return False if Path(path) == secret else real_access(path, mode, *args, **kwargs)

        def scandir(path="."):
            if Path(path) == folder / "locked":
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "access", access)
        monkeypatch.setattr(os, "scandir", scandir)
    else:
        secret.chmod(0)
        (folder / "locked").chmod(0)
    try:
        out = tmp_path / "scores.csv"
        assert main([str(folder), "-r", "-o", str(out), "--no-progress"]) == 1
        rows = {Path(r["file"]).name: r for r in rows_of(out)}
        assert rows["secret.wav"]["error"] == "permission denied (the file is not readable)"
        assert rows["secret.wav"]["mos"] == ""
        assert rows["locked"]["error"] == "folder cannot be read (Permission denied)"
        assert f"error: {secret}: permission denied" in capsys.readouterr().err
    finally:
        (folder / "locked").chmod(0o755)


# --- --dtype ---------------------------------------------------------------------------------------------------------


def test_dtype_reaches_the_scorer(monkeypatch, capsys):
    import torch

    from distill_mos.scorer import DistillMOSScorer

    loaded = []
    real = DistillMOSScorer.from_pretrained.__func__

    def spy(cls, *args, **kwargs):  # the real loader; remembers what it made
        loaded.append(real(cls, *args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(DistillMOSScorer, "from_pretrained", classmethod(spy))
    assert main([str(DIR3 / "ref.wav"), "--dtype", "bfloat16", "--device", "cpu"]) == 0
    bf16 = float(next(csv.DictReader(capsys.readouterr().out.splitlines()))["mos"])
    assert loaded[-1].dtype == torch.bfloat16
    assert main([str(DIR3 / "ref.wav"), "--device", "cpu"]) == 0
    fp32 = float(next(csv.DictReader(capsys.readouterr().out.splitlines()))["mos"])
    assert loaded[-1].dtype == torch.float32
    assert abs(bf16 - fp32) < 0.2  # a lower precision, not another model


def test_ray_refuses_options_it_would_ignore_and_reports_a_failed_job_in_one_line(monkeypatch, tmp_path, capsys):
    from distill_mos import cli

    for extra in (["--backend", "onnx"], ["--half"], ["--onnx-path", "x.onnx"]):
        assert main([str(DIR3 / "ref.wav"), "--ray", *extra]) == 2
        assert "--ray scores with the torch backend in each actor: drop --backend onnx, --onnx-path and --half" in (
            capsys.readouterr().err
        )

    def failing(*args, **kwargs):  # what an actor's failure surfaces as, after Ray's retries
        raise RuntimeError("ActorDiedError: the actor died unexpectedly\n  ... pages of Ray traceback ...")
        yield

    monkeypatch.setattr(cli, "_connect_ray", lambda address: False)
    monkeypatch.setattr(cli, "_score_ray", failing)
    out = tmp_path / "scores.csv"
    assert main([str(DIR3 / "ref.wav"), "--ray", "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == "distill-mos: error: the Ray job failed (RuntimeError: ActorDiedError: the actor died unexpectedly)\n"
    assert not out.exists()  # nothing that looks like a complete output
