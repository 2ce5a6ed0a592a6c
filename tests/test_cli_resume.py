"""`distill-mos --resume`: a run killed or interrupted halfway continues where it stopped (issue 10, point 3)."""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import GENSPEECH, ROOT, all_sample_files

from distill_mos.cli import main

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
CONSOLE = Path(sys.executable).parent / "distill-mos"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """8 clips and one corrupt file, in a folder (sorted order = scoring order)."""
    folder = tmp_path_factory.mktemp("corpus")
    for index, source in enumerate(all_sample_files()[:8]):
        shutil.copy(source, folder / f"clip{index}.wav")
    (folder / "clip3.wav").write_text("corrupt")  # an error row in the middle
    return folder


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "scores.csv"
    assert main([str(corpus), "-o", str(out), "--batch-size", "1", "-q"]) == 1  # 1: the corrupt file
    return read(out)


def read(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_same_rows(rows, expected):
    assert [r["file"] for r in rows] == [r["file"] for r in expected]  # one row per input, none twice, same order
    for row, reference in zip(rows, expected):
        for key in reference:
            if key == "mos" and reference[key] not in ("", None):
                assert float(row[key]) == pytest.approx(float(reference[key]), abs=1e-5), row["file"]
            else:
                assert row[key] == reference[key], (key, row["file"])


def start(corpus, out, *extra) -> subprocess.Popen:
    command = [str(CONSOLE)] if CONSOLE.exists() else [sys.executable, "-m", "distill_mos.cli"]
    # SIGINT back to its default in the child: a test process started under `nohup` (or any parent that ignores
    # SIGINT) passes the ignored signal on, and the Ctrl-C test would then wait for an interrupt that never comes.
    return subprocess.Popen([*command, str(corpus), "-o", str(out), "--batch-size", "1", "-q", *extra],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_after_rows(process: subprocess.Popen, partial: Path, rows: int, sig: int) -> None:
    """Sends `sig` once `partial` holds `rows` complete rows (plus the header)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= rows + 1:
            process.send_signal(sig)
            break
        time.sleep(0.05)
    else:
        process.kill()
        pytest.fail(f"the run ended or stalled before writing {rows} rows: {process.stderr.read()[-2000:]}")


def test_a_killed_run_resumes_to_the_uninterrupted_output(corpus, uninterrupted, tmp_path):
    out = tmp_path / "scores.csv"
    partial = tmp_path / "scores.csv.partial"
    process = start(corpus, out)
    stop_after_rows(process, partial, 2, signal.SIGKILL)
    process.wait(timeout=60)
    assert not out.exists()  # nothing under the requested name looks complete
    done_before = len(read(partial))
    assert 2 <= done_before < len(uninterrupted)

    resumed = subprocess.run([str(CONSOLE), str(corpus), "-o", str(out), "--batch-size", "1", "--resume"],
                             cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stderr  # the corrupt file, as in the uninterrupted run
    assert f"resuming: {done_before} of {len(uninterrupted)} file(s) already scored" in resumed.stderr
    assert not partial.exists()
    assert_same_rows(read(out), uninterrupted)


def test_ctrl_c_keeps_the_rows_and_says_how_to_continue(corpus, uninterrupted, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    process = start(corpus, out)
    stop_after_rows(process, tmp_path / "scores.csv.partial", 3, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert main([str(corpus), "-o", str(out), "--batch-size", "1", "--resume", "-q"]) == 1
    assert_same_rows(read(out), uninterrupted)


def as_csv_text(row: dict) -> dict:
    """A JSON Lines row written as the CSV writer writes it."""
    return {k: "" if v is None else str(v) for k, v in row.items()}


def test_a_row_cut_short_is_rescored_and_a_finished_run_is_extended(uninterrupted, tmp_path):
    out = tmp_path / "scores.jsonl"
    files = [r["file"] for r in uninterrupted]
    # an earlier run scored three files, and was killed while writing the 4th row
    assert main([*files[:3], "-o", str(out), "--batch-size", "1", "-q"]) == 0
    partial = tmp_path / "scores.jsonl.partial"
    out.rename(partial)
    with open(partial, "a") as handle:
        handle.write('{"file": "' + files[3][:10])
    assert main([*files, "-o", str(out), "--resume", "-q"]) == 1
    assert_same_rows([as_csv_text(r) for r in read(out)], uninterrupted)
    # a finished output: --resume with one more input appends only that one
    extra = str(DIR3 / "ref.wav")
    assert main([*files, extra, "-o", str(out), "--resume", "-q"]) == 1
    assert [r["file"] for r in read(out)] == [*files, extra]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-o", "-", "--resume"], "--resume needs an output file"),
        (["--overwrite", "--resume"], "contradict"),
        (["--resume", "--windows"], "cannot resume: its columns"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(corpus, tmp_path, capsys, argv, message):
    out = tmp_path / "scores.csv"
    out.write_text("file,mos,duration_s,sampling_rate,channels,error,warning\n")
    if "-o" not in argv:
        argv = [*argv, "-o", str(out)]
    assert main([str(corpus), *argv]) == 2
    assert message in capsys.readouterr().err
