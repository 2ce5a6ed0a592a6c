"""add_mos_column at corpus scale: bad rows in any batch, streaming datasets, num_proc workers (issue 10, point 1)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import soundfile
from conftest import GENSPEECH, ROOT, require_module

from distill_mos import add_mos_column

datasets = require_module("datasets")

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
GOOD = [str(DIR3 / "ref.wav"), str(DIR3 / "speex.wav"), str(DIR3 / "melp.wav")]


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "corrupt.wav"
    path.write_text("not audio at all\n" * 10)
    return str(path)


@pytest.fixture(scope="module")
def expected(scorer):
    return {path: next(scorer.score_files([path])).mos for path in GOOD}


def audio_dataset(files):
    return datasets.Dataset.from_dict({"audio": files, "file": files}).cast_column("audio", datasets.Audio())


def check(scored, files, expected, windows=False):
    # (the audio column decodes again when read: a corrupt row would raise there, so read the others)
    rows = list(scored.select_columns([c for c in scored.column_names if c != "audio"]))
    assert [r["file"] for r in rows] == files  # one row per input, in order
    for row in rows:
        if row["file"] in expected:
            assert row["mos_error"] is None, row["mos_error"]
            assert row["mos"] == pytest.approx(expected[row["file"]], abs=1e-5)
            if windows:
                assert len(row["mos_window_scores"]) == len(row["mos_window_start_times"]) == 2  # 7.8 s: two windows
        else:
            assert row["mos"] is None and row["mos_error"], row
            if windows:
                assert row["mos_window_scores"] is None


@pytest.mark.parametrize(
    "layout, batch_size",
    [
        ("bad last, after a batch without errors", 2),  # issue 10: 'mos_error' typed null by the first batch
        ("bad first, batch of one", 1),  # the same for 'mos'
        ("a whole batch of bad rows", 2),
        ("every row bad", 2),
    ],
)
def test_bad_rows_anywhere_keep_declared_types(scorer, expected, corrupt, tmp_path, layout, batch_size):
    missing = str(tmp_path / "missing.wav")
    files = {
        "bad last, after a batch without errors": [GOOD[0], GOOD[1], corrupt],
        "bad first, batch of one": [missing, GOOD[0]],
        "a whole batch of bad rows": [GOOD[0], GOOD[1], missing, corrupt, GOOD[2]],
        "every row bad": [missing, corrupt, missing],
    }[layout]
    scored = add_mos_column(audio_dataset(files), scorer=scorer, batch_size=batch_size, windows=True)
    assert scored.features["mos"] == datasets.Value("float32")
    assert scored.features["mos_error"] == datasets.Value("string")
    assert scored.features["mos_window_scores"] == datasets.List(datasets.Value("float32"))
    check(scored, files, expected, windows=True)


def test_streaming_dataset_gives_the_same_columns_and_scores(scorer, expected, corrupt):
    files = [GOOD[0], corrupt, GOOD[1]]
    regular = add_mos_column(audio_dataset(files), scorer=scorer, batch_size=2)
    stream = add_mos_column(audio_dataset(files).to_iterable_dataset(), scorer=scorer, batch_size=2, desc="ignored")
    assert isinstance(stream, datasets.IterableDataset)
    assert stream.column_names == regular.column_names == ["audio", "file", "mos", "mos_error", "mos_provenance"]
    rows = list(stream.select_columns(["file", "mos", "mos_error"]))
    assert [r["mos_error"] for r in rows] == regular["mos_error"]
    for row, mos in zip(rows, regular["mos"]):
        assert row["mos"] == mos  # the same float32 values
    check(stream, files, expected)
    with pytest.raises(ValueError, match="num_proc is not supported for a streaming"):
        add_mos_column(audio_dataset(files).to_iterable_dataset(), scorer=scorer, num_proc=2)


def test_undecoded_bytes_values_take_the_block_decoder_and_a_bad_one_costs_only_itself(
    scorer, expected, corrupt, monkeypatch
):
    """Issue 23: `{"bytes", "path"}` rows (Audio(decode=False)) are decoded block by block, as files are, not whole."""
    from distill_mos import datasets as mos_datasets

    whole = []
    monkeypatch.setattr(mos_datasets, "decode_bytes", lambda *a, **k: whole.append(a) or pytest.fail("decoded whole"))
    monkeypatch.setattr(mos_datasets, "load_audio", lambda *a, **k: whole.append(a) or pytest.fail("decoded whole"))
    files = [GOOD[0], corrupt, GOOD[1], GOOD[2]]
    values = [{"bytes": open(f, "rb").read(), "path": f} for f in files[:3]] + [{"bytes": None, "path": files[3]}]
    dataset = datasets.Dataset.from_dict({"audio": values, "file": files})
    dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    scored = add_mos_column(dataset, scorer=scorer, batch_size=4)  # the bad row in the middle of one batch
    check(scored, files, expected)
    assert scored["mos_error"][1].startswith("not a readable audio file")
    assert whole == []


def test_num_proc_after_the_parent_ran_torch_multithreaded(expected, corrupt, tmp_path):
    """
    Forked workers used to hang in their first OpenMP region when the parent had run torch on several threads.
    Run in a child process with a timeout, so that a hang fails the test instead of blocking the suite.
    """
    files = [GOOD[0], corrupt, GOOD[1], GOOD[2]]
    script = textwrap.dedent(f"""
        import json, sys, torch, datasets
        sys.path.insert(0, {str(ROOT)!r})
        torch.set_num_threads(2)
        x = torch.randn(1500, 1500)
        (x @ x).sum()  # the parent's OpenMP team now exists
        torch.nn.functional.conv2d(torch.randn(1, 16, 64, 64), torch.randn(16, 16, 3, 3))
        from distill_mos import add_mos_column
        files = {files!r}
        ds = datasets.Dataset.from_dict({{"audio": files, "file": files}}).cast_column("audio", datasets.Audio())
        scored = add_mos_column(ds, batch_size=1, num_proc=2, device="cpu", num_threads=2)
        print(json.dumps({{"mos": list(scored["mos"]), "error": list(scored["mos_error"]), "file": list(scored["file"])}}))
    """)
    env = {**os.environ, "DISTILL_MOS_MODEL": str(ROOT), "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, start_new_session=True)
    try:
        out, err = child.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the hung workers too
        child.communicate()
        pytest.fail("add_mos_column(num_proc=2) hung after the parent ran torch on 2 threads")
    assert child.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["file"] == files
    assert result["error"][1] and result["mos"][1] is None
    for i in (0, 2, 3):
        assert result["error"][i] is None
        assert result["mos"][i] == pytest.approx(expected[files[i]], abs=1e-5)


def test_worker_threads_and_gpu_per_rank(monkeypatch):
    """Each worker takes cpu_count // num_proc threads, and rank r takes cuda:(r % device_count)."""
    from distill_mos import datasets as mos_datasets
    from distill_mos.scorer import DistillMOSScorer

    calls = []
    real = DistillMOSScorer.from_pretrained.__func__

    def spy(cls, location=None, device="auto", **kwargs):  # records the arguments, loads on the CPU for real
        calls.append((device, kwargs.get("dtype")))
        return real(cls, location, device="cpu", **kwargs)

    monkeypatch.setattr(DistillMOSScorer, "from_pretrained", classmethod(spy))
    monkeypatch.setattr("distill_mos.engine.cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    threads = torch.get_num_threads()
    try:
        mapper = mos_datasets._MOSMapper(None, {"location": str(ROOT), "device": "auto", "dtype": "float32"},
                                         "audio", "mos", "first", False, num_proc=3)
        for rank in (0, 5):
            mapper._load(rank)
            assert torch.get_num_threads() == 16 // 3
        assert calls == [("cuda:0", "float32"), ("cuda:1", "float32")]
    finally:
        torch.set_num_threads(threads)


def test_worker_settings_follow_a_given_scorer(model, feature_extractor):
    from distill_mos import DistillMOSScorer
    from distill_mos.datasets import _MOSMapper, _scorer_settings

    given = DistillMOSScorer(model, feature_extractor, batch_size=3, window_hop=4.0)
    settings = _scorer_settings(given)
    assert settings["batch_size"] == 3 and settings["window_hop"] == pytest.approx(4.0)
    assert settings["dtype"] == "float32" and settings["backend"] == "torch"
    mapper = _MOSMapper(given, settings, "audio", "mos", "first", False, num_proc=2)
    import pickle

    clone = pickle.loads(pickle.dumps(mapper))  # what a worker receives: settings, no model
    assert clone.scorer is None and clone.settings == settings


def test_num_proc_refuses_a_scorer_its_workers_could_not_reload(model, feature_extractor):
    """Workers load their own model from the scorer's location: an in-memory or changed model must be refused, not
    silently replaced by the released one (and the cache fingerprint must tell models apart)."""
    import copy

    import torch

    from distill_mos import DistillMOSScorer
    from distill_mos.datasets import _scorer_settings
    from configuration_distillmos import DistillMOSConfig
    from modeling_distillmos import DistillMOSModel

    ds = audio_dataset(GOOD[:2])
    in_memory = DistillMOSScorer(DistillMOSModel(DistillMOSConfig()).eval(), feature_extractor)  # no location at all
    with pytest.raises(ValueError, match="not loaded from a folder or Hub id, so workers cannot load it: save it"):
        add_mos_column(ds, scorer=in_memory, num_proc=2)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.pooling.readout.bias += 0.5  # as fine-tuning would
    tuned = DistillMOSScorer(changed, feature_extractor)
    with pytest.raises(ValueError, match=f"differs from the weights at {ROOT}"):
        add_mos_column(ds, scorer=tuned, num_proc=2)
    assert _scorer_settings(tuned)["weights"] != _scorer_settings(DistillMOSScorer(model, feature_extractor))["weights"]


def test_a_samples_by_channels_array_is_an_error_row_not_a_two_sample_clip(scorer):
    import numpy as np

    audio, rate = soundfile.read(GOOD[0], dtype="float32")
    stereo = np.stack([audio, audio], axis=1)  # (samples, 2), as soundfile.read returns for stereo
    ds = datasets.Dataset.from_dict({"audio": [{"array": stereo, "sampling_rate": rate}, {"array": stereo.T, "sampling_rate": rate}]})
    rows = list(add_mos_column(ds, scorer=scorer).select_columns(["mos", "mos_error"]))
    assert rows[0]["mos"] is None
    assert rows[0]["mos_error"] == (
        f"the audio array has shape {stereo.shape}, which looks like (samples, channels) as soundfile.read returns; "
        "store (channels, samples) or pick one channel (x[:, 0]) or average them (x.mean(axis=1))."
    )
    assert rows[1]["mos_error"] is None and rows[1]["mos"] == pytest.approx(scorer.score_array(audio, rate).mos, abs=1e-5)
