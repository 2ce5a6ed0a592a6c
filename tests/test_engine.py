"""
The one scoring path (issue 17): every kind of input goes through `DistillMOSScorer.score_items` in order, a bad
item anywhere costs only itself, decoding threads change nothing but speed, their queue stays bounded, and the
names every interface shares import without torch.
"""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile
from conftest import GENSPEECH, ROOT

from distill_mos import DistillMOSScorer
from distill_mos.cli import main
from distill_mos.engine import Execution, ordered_map
from distill_mos.results import FileScore, Item

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"


def test_every_kind_of_input_in_order_with_bad_items_after_the_first_batch(scorer, tmp_path):
    speech, rate = soundfile.read(DIR3 / "melp.wav", dtype="float32")
    short = speech[: rate * 2]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_text("not audio")
    items = [
        Item.file(DIR3 / "opus.wav"),
        Item.array(short, rate, "two seconds"),
        Item.encoded((DIR3 / "speex.wav").read_bytes(), "speex.wav"),  # the second batch starts here
        Item.file(corrupt),  # bad, inside the second batch
        Item.audio({"array": speech, "sampling_rate": rate}),
        Item.array(np.full(16000, np.nan, np.float32), 16000, "nan"),  # bad, third batch
        Item.failed("listed folder", "folder cannot be read (Permission denied)"),
        Item.audio({"bytes": (DIR3 / "lpcnq.wav").read_bytes(), "path": "lpcnq.wav"}),
    ]
    small_batches = DistillMOSScorer(scorer.model, scorer.feature_extractor, batch_size=2)
    results = list(small_batches.score_items(items))
    assert [r.path for r in results] == [
        str(DIR3 / "opus.wav"), "two seconds", "speex.wav", str(corrupt), None, "nan", "listed folder", "lpcnq.wav",
    ]
    assert [r.ok for r in results] == [True, True, True, False, True, False, False, True]
    assert results[3].error.startswith("not a readable audio file") and results[3].error_type is None
    assert "NaN" in results[5].error
    assert results[6].error == "folder cannot be read (Permission denied)"
    alone = {
        0: next(scorer.score_files([DIR3 / "opus.wav"])).mos,
        1: scorer.score_array(short, rate).mos,
        2: next(scorer.score_files([DIR3 / "speex.wav"])).mos,
        4: scorer.score_array(speech, rate).mos,
        7: next(scorer.score_files([DIR3 / "lpcnq.wav"])).mos,
    }
    for index, mos in alone.items():
        assert results[index].mos == pytest.approx(mos, abs=1e-5), index
    assert results[1].duration == pytest.approx(2.0) and results[1].sampling_rate == rate
    assert len(results[4].window_scores) == len(results[4].window_start_times) == 2  # 7.8 s: two windows


def test_a_network_failure_is_typed_not_a_string_to_parse(model, feature_extractor):
    def out_of_memory(windows, *args):
        raise MemoryError("simulated")

    failing = DistillMOSScorer(model, feature_extractor, window_scorer=out_of_memory)
    [result] = failing.score_items([Item.file(DIR3 / "opus.wav")])
    assert result.mos is None and result.error_type == "MemoryError"
    assert result.error == "scoring failed: MemoryError: simulated"


def test_decoding_threads_give_the_same_results(model, feature_extractor):
    files = sorted(str(p) for p in DIR3.glob("*.wav")) * 2
    one = DistillMOSScorer(model, feature_extractor, execution=Execution(decode_workers=1))
    three = DistillMOSScorer(model, feature_extractor, execution=Execution(decode_workers=3))
    assert [r.mos for r in three.score_files(files)] == pytest.approx([r.mos for r in one.score_files(files)], abs=1e-6)


def test_ordered_map_keeps_order_and_never_runs_far_ahead_of_its_consumer():
    started = []
    lock = threading.Lock()

    def slow(value):
        with lock:
            started.append(value)
        time.sleep(0.002 * (value % 3))
        return value * 10

    taken = []
    for result in ordered_map(slow, range(100), workers=4, max_pending=5):
        with lock:
            ahead = len(started) - len(taken)
        assert ahead <= 5  # a million files never pile up decoded in memory
        taken.append(result)
        time.sleep(0.001)
    assert taken == [v * 10 for v in range(100)]


def test_a_run_whose_inputs_are_all_missing_answers_without_loading_the_model(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("distill_mos.cli._load_scorer", lambda args: pytest.fail("loaded the model for no input"))
    out = tmp_path / "scores.csv"
    assert main([str(tmp_path / "a.wav"), str(tmp_path / "b.flac"), "-o", str(out)]) == 1
    rows = out.read_text().splitlines()
    assert rows[1].endswith(",no such file,") and rows[2].endswith(",no such file,")


def test_shared_names_and_result_types_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from distill_mos.columns import COLUMNS, WINDOW_COLUMNS, DTYPE_CHOICES\n"
        "from distill_mos.results import FileScore, Item, file_row\n"
        "import distill_mos.cli\n"
        "print(WINDOW_COLUMNS)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "window_start_times" in done.stdout


def test_cli_and_ray_do_not_import_each_other():
    code = (
        "import sys, distill_mos.cli; assert 'distill_mos.ray' not in sys.modules\n"
        "del sys.modules['distill_mos.cli']\n"
        "import distill_mos.ray; assert 'distill_mos.cli' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_file_rows_round_trip():
    from distill_mos.results import file_row, from_file_row

    result = FileScore(path="a.wav", mos=3.25, duration=2.0, sampling_rate=8000, channels=2,
                       window_scores=[3.25], window_start_times=[0.0], warning="audio is very short")
    assert from_file_row(file_row(result, windows=True)) == result
