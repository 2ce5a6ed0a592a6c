"""
Scoring with Ray Data (issue 10, points 2 and 3) on a local Ray instance sized like CI (2 CPUs): the CLI's --ray
gives the same rows as without it, an actor killed mid-job loses and duplicates nothing, and 🤗 datasets go to
Parquet. Few files and at most two actors, so that the module finishes in a minute or two on 2 cores.
"""

import csv
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import GENSPEECH, ROOT, require_module

# Keep the local instances small and quiet: no usage report, no dashboard (init_ray), no log deduplication pass.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Isolated from any other Ray on the machine (an earlier `ray start`, another test run): a temp dir of its own, short
# because Ray puts Unix sockets in it (at most 107 characters a path).
RAY_TMPDIR = tempfile.mkdtemp(prefix="dmray", dir="/tmp")
os.environ["RAY_TMPDIR"] = RAY_TMPDIR
ray = require_module("ray", "the ray extra (in the test extra)")
require_module("ray.data", "the ray extra (in the test extra)")
pa = require_module("pyarrow", "needed by ray.data (in the test extra)")

from distill_mos.cells import printable_path  # noqa: E402
from distill_mos.cli import main  # noqa: E402
from distill_mos.ray import DistillMOSPredictor, init_ray, score_files_with_ray, score_with_ray  # noqa: E402

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
GOOD = [str(DIR3 / name) for name in ("ref.wav", "speex.wav", "melp.wav", "opus.wav")]
CONSOLE = Path(sys.executable).parent / "distill-mos"
TEST_TIMEOUT_S = 420  # a deadlocked pool fails the test instead of hanging CI


@pytest.fixture(autouse=True)
def bounded_time():
    def expired(signum, frame):
        raise TimeoutError(f"Ray test took over {TEST_TIMEOUT_S} s (a deadlock of actors and tasks?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT_S)
    # SIGALRM runs its handler only between Python bytecodes: a main thread blocked inside Ray's C++ client never
    # sees it. faulthandler's watchdog is a C thread: it prints every thread's stack and ends the run (CI fails
    # instead of hanging until its own limit).
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S + 60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_inputs")
    corrupt = folder / "corrupt.wav"
    corrupt.write_text("not audio\n" * 50)
    odd = folder / os.fsdecode(b"odd \xff\xfe.wav")  # not UTF-8: Arrow strings cannot hold the name as it is
    shutil.copy(GOOD[1], odd)
    return [GOOD[0], str(corrupt), GOOD[1], str(odd), str(folder / "missing.wav"), GOOD[2], GOOD[3]]


@pytest.fixture(scope="module")
def local_rows(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "scores.csv"
    assert main([*files, "-o", str(out), "-q"]) == 1
    return read_csv(out)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_rows_match(rows, expected):
    assert [r["file"] for r in rows] == [r["file"] for r in expected]  # one row per input, in order, none twice
    for row, reference in zip(rows, expected):
        assert list(row) == list(reference)
        for key, value in reference.items():
            if key == "mos" and value not in ("", None):
                assert float(row[key]) == pytest.approx(float(value), abs=1e-5), row["file"]
            else:
                assert str(row[key] if row[key] is not None else "") == str(value if value is not None else ""), key


def test_cli_ray_starts_a_local_instance_and_gives_the_same_rows(files, local_rows, tmp_path):
    assert not ray.is_initialized()
    # A stale cluster file of an earlier `ray start` (its cluster long gone): a local run must not try to join it.
    Path(RAY_TMPDIR, "ray_current_cluster").write_text("127.0.0.1:9\n")
    out = tmp_path / "ray.csv"
    code = main([*files, "-o", str(out), "--ray", "--ray-actors", "2", "-q"])
    assert code == 1  # the corrupt and the missing file, as without --ray
    assert not ray.is_initialized()  # the instance the run started is shut down again
    assert_rows_match(read_csv(out), local_rows)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the tests below, accounted as CI's 2 CPUs."""
    init_ray(None, num_cpus=2, object_store_memory=200 * 1024**2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_cli_ray_address_joins_a_running_cluster(local_ray, files, local_rows, tmp_path):
    out = tmp_path / "joined.csv"
    command = [str(CONSOLE)] if CONSOLE.exists() else [sys.executable, "-m", "distill_mos.cli"]
    done = subprocess.run([*command, *files, "-o", str(out), "--ray", local_ray, "--ray-actors", "1", "-q"],
                          capture_output=True, text=True, cwd=ROOT, timeout=TEST_TIMEOUT_S - 30)
    assert done.returncode == 1, done.stderr[-3000:]
    assert_rows_match(read_csv(out), local_rows)


class DiesOnItsSecondBatch(DistillMOSPredictor):
    """An actor whose process dies (as if killed) on its 2nd batch, once per test: `marker` records the death."""

    def __init__(self, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker, self.batches = marker, 0

    def __call__(self, batch):
        self.batches += 1
        if self.batches == 2 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(batch)


def test_an_actor_dying_mid_job_loses_and_duplicates_nothing(local_ray, files, local_rows, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    marker = tmp_path / "died"
    rows = list(score_files_with_ray(files, num_actors=2, predictor=DiesOnItsSecondBatch, marker=str(marker),
                                     batch_size=1))
    assert marker.exists(), "no actor died: the test did not test anything"
    assert_rows_match(rows, local_rows)


def test_a_dataset_scored_to_parquet_and_csv(local_ray, files, local_rows, tmp_path):
    datasets = require_module("datasets")
    import pyarrow.parquet as pq

    utf8 = [f for f in files if f.isprintable() and f == printable_path(f)]  # a datasets string column is UTF-8
    dataset = datasets.Dataset.from_dict({"audio": utf8, "file": utf8}).cast_column("audio", datasets.Audio())
    table = pq.read_table(score_with_ray(dataset, tmp_path / "scores.parquet", num_actors=1))
    assert table.column_names == ["file", "mos", "mos_error", "mos_warning"]  # the audio is not copied
    assert table.schema.field("mos").type == pa.float64() and table.schema.field("mos_error").type == pa.string()
    by_file = {r["file"]: r for r in local_rows}
    assert table.column("file").to_pylist() == utf8
    for row in table.to_pylist():
        reference = by_file[row["file"]]
        if reference["error"]:
            assert row["mos"] is None and row["mos_error"]
        else:
            assert row["mos"] == pytest.approx(float(reference["mos"]), abs=1e-5) and row["mos_error"] is None

    out = score_with_ray(files, tmp_path / "scores.csv", num_actors=1)  # the name that is not UTF-8 as \xNN
    assert [r["file"] for r in read_csv(out)] == [printable_path(f) for f in files]


def test_predictor_reads_arrays_bytes_and_paths_and_declares_types(scorer, tmp_path):
    """The map_batches callable by itself (no cluster needed), with bad rows only in one batch."""
    import numpy as np
    import soundfile
    import torch

    predictor = DistillMOSPredictor(device="cpu", num_threads=1, windows=True)
    speech, rate = soundfile.read(GOOD[1], dtype="float32")
    expected = scorer.score_array(speech, rate).mos
    arrays = predictor(pa.table({"array": [speech.tolist(), []], "sampling_rate": [rate, rate]}))
    assert arrays.column("mos").to_pylist()[0] == pytest.approx(expected, abs=1e-5)
    assert arrays.column("mos").to_pylist()[1] is None and "empty" in arrays.column("mos_error").to_pylist()[1]
    assert "array" not in arrays.column_names and len(arrays.column("mos_window_scores").to_pylist()[0]) == 2
    encoded = predictor(pa.table({"bytes": [Path(GOOD[1]).read_bytes()]}))
    assert encoded.column("mos").to_pylist()[0] == pytest.approx(expected, abs=1e-5)
    all_bad = predictor(pa.table({"path": [str(tmp_path / "gone.wav")]}))
    assert all_bad.schema.field("mos").type == pa.float64()  # typed, though every value is None
    assert all_bad.column("mos_error").to_pylist() == ["no such file"]
    assert DistillMOSPredictor(device="cpu", num_threads=1, dtype="bfloat16").scorer.dtype == torch.bfloat16
    assert np.isfinite(expected)
