"""
Fine-tuning (`distill_mos.finetune`) on the bundled clips: the cached-feature head is the model's own window score,
training lowers the training loss and can over-fit a tiny set, grouped folds never share a group, the same seed
gives the same figures, bad rows are reported and lose no other row, and a saved model loads everywhere the
released one does and scores exactly as it scored in memory.

No test claims that fine-tuning improves agreement with listeners on these 16 clips: far too few to say so (that is
bench/finetune_benchmark.py's job). Training uses the real model (cached convolutional features, a few optimizer
steps) to stay fast on 2 CPU cores.
"""

import contextlib
import copy
import csv
import io
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import GENSPEECH, ROOT, TCDVOIP, require_module

require_module("accelerate", "what transformers.Trainer needs (the test extra)")

from distill_mos.finetune import FinetuneSettings, finetune, grouped_folds, grouped_holdout, load_labels  # noqa: E402
from distill_mos.finetune.cli import main as finetune_main  # noqa: E402
from distill_mos.finetune.data import LabelledClip, label_mapper  # noqa: E402
from distill_mos.finetune.export import model_card  # noqa: E402
from distill_mos.finetune.model import (  # noqa: E402
    DistillMOSClipRegressor,
    WindowCollator,
    clip_windows,
    decode_clip,
    encode_windows,
    predict,
    prepare_clips,
)
from distill_mos.finetune import search as search_module  # noqa: E402
from distill_mos.finetune import training as training_module  # noqa: E402
from distill_mos.finetune.training import (  # noqa: E402
    DEFAULT_STEPS,
    LARGE_SET_VALIDATION_FRACTION,
    SMALL_SET,
    TrainingRun,
    cross_validate,
    fit,
    train,
)


def rated_rows() -> list[dict]:
    """The bundled rated clips: absolute path, MOS, and a group (GenSpeech stimulus dir1/dir3, TCD-VoIP talker)."""
    rows = []
    for folder, group_column in ((GENSPEECH, "item"), (TCDVOIP, "speaker")):
        with open(folder / "labels.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                if row["mos"].strip():
                    rows.append({"file": str(folder / row["file"]), "mos": float(row["mos"]),
                                 "group": f"{folder.name}-{row[group_column]}"})
    return rows


def write_csv(path: Path, rows: list[dict], columns=("file", "mos", "group")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


@pytest.fixture(scope="module")
def base_model():
    """The released model; tests fine-tune deep copies of it, never this one."""
    from modeling_distillmos import DistillMOSModel

    return DistillMOSModel.from_pretrained(str(ROOT)).eval()


@pytest.fixture(scope="module")
def prepared(base_model, feature_extractor):
    """All 16 bundled rated clips with their cached convolutional features (computed once for the module)."""
    clips = [LabelledClip(Path(r["file"]).name, r["mos"], r["mos"], r["file"], r["group"]) for r in rated_rows()]
    ready, issues = prepare_clips(base_model, feature_extractor, clips)
    assert not [i for i in issues if i.level == "error"]
    assert len(ready) == 16
    return ready


def fresh(base_model):
    model = copy.deepcopy(base_model).eval()
    model.window_executor = base_model.window_executor
    return model


# --- the cached-feature path is the model's own score ----------------------------------------------------------


def test_cached_feature_forward_equals_the_models_window_and_clip_scores(base_model, feature_extractor, prepared):
    long_clip = next(c for c in prepared if c.inputs.shape[0] > 1)  # a clip longer than one window
    short_clip = prepared[0]
    regressor = DistillMOSClipRegressor(base_model, cached_features=True)
    for clip in (short_clip, long_clip):
        waveform = feature_extractor.prepare_clip(*_decoded(clip.clip.audio), name="audio")
        windows = clip_windows(waveform, base_model.config.window_length, base_model.config.max_window_hop)
        with torch.no_grad():
            reference = base_model._score_window_batch(windows)  # the model's own per-window score
            features = encode_windows(base_model, windows)
            regressor.eval()
            cached_eval = regressor.window_scores(features)
            regressor.train()  # training mode: batch norms must stay at their running statistics
            cached_train = regressor.window_scores(features)
            regressor.eval()
            mos = base_model(torch.from_numpy(waveform)[None]).mos
            batch = WindowCollator()([{"inputs": clip.inputs, "labels": 3.0}])
            clip_mos = regressor(batch["inputs"], batch["window_clip"]).mos
        torch.testing.assert_close(features, clip.inputs, atol=1e-5, rtol=0)  # the cache holds these features
        torch.testing.assert_close(cached_eval, reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(cached_train, reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(clip_mos, mos, atol=1e-5, rtol=0)
    for parameter in base_model.parameters():
        parameter.requires_grad_(False)


def _decoded(path):
    from distill_mos.audio import load_audio

    decoded = load_audio(path)
    return decoded.waveform, decoded.sampling_rate


@pytest.mark.slow  # a backward pass through the convolutions: seconds per window on 2 cores
def test_train_all_path_is_the_models_window_score_and_trains_the_convolutions(base_model, feature_extractor):
    model = fresh(base_model)
    clip = LabelledClip("lpcnu.wav", 4.19, 4.19, rated_rows()[4]["file"])  # one window
    ready, _ = prepare_clips(model, feature_extractor, [clip], cache_features=False)
    windows = ready[0].inputs
    assert windows.shape == (1, model.config.window_length)
    regressor = DistillMOSClipRegressor(model, cached_features=False)
    with torch.no_grad():
        reference = model._score_window_batch(windows)
        regressor.train()
        torch.testing.assert_close(regressor.window_scores(windows), reference, atol=1e-5, rtol=0)
    conv_before = model.feature_encoder.conv_layers[0].conv.weight.detach().clone()
    settings = FinetuneSettings(epochs=1, batch_size=1, learning_rate=1e-5, validation_fraction=0, train_all=True)
    run = train(model, ready, settings=settings, verbose=False)
    assert run.epochs_run == 1
    assert not torch.equal(model.feature_encoder.conv_layers[0].conv.weight, conv_before)


def test_any_rate_and_channel_count_goes_through_the_scorers_decode_path(tmp_path, base_model, feature_extractor):
    """A stereo 22.05 kHz file: the cached path scores it exactly as `DistillMOSScorer` scores the file."""
    import soundfile
    import torchaudio

    waveform, rate = _decoded(rated_rows()[2]["file"])
    left = torchaudio.functional.resample(torch.from_numpy(waveform), rate, 22050).numpy()
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, 0.3 * left[::-1]], axis=1), 22050, subtype="PCM_24")
    from distill_mos import DistillMOSScorer

    expected = next(DistillMOSScorer(base_model, feature_extractor).score_files([path])).mos
    ready, issues = prepare_clips(base_model, feature_extractor, [LabelledClip("stereo", 3.0, 3.0, str(path))])
    assert not issues
    assert predict(DistillMOSClipRegressor(base_model), ready)[0] == pytest.approx(expected, abs=1e-5)
    for parameter in base_model.parameters():
        parameter.requires_grad_(False)


def test_a_hub_id_that_cannot_be_reached_offline_is_a_clear_error(monkeypatch):
    require_module("datasets")
    from distill_mos.finetune import FinetuneError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FinetuneError, match="no-such-user/no-such-listening-test"):
        load_labels("no-such-user/no-such-listening-test")


def test_collator_keeps_each_clips_windows_together(prepared):
    items = [{"inputs": c.inputs, "labels": c.clip.target} for c in prepared[:3]]
    batch = WindowCollator()(items)
    counts = [c.inputs.shape[0] for c in prepared[:3]]
    assert batch["inputs"].shape[0] == sum(counts)
    assert batch["window_clip"].tolist() == [i for i, n in enumerate(counts) for _ in range(n)]
    assert batch["labels"].tolist() == pytest.approx([c.clip.target for c in prepared[:3]])


# --- training ---------------------------------------------------------------------------------------------------


def test_training_lowers_the_training_loss_and_leaves_the_convolutions_alone(base_model, prepared):
    model = fresh(base_model)
    conv_before = [p.detach().clone() for p in model.feature_encoder.parameters()]
    head_before = [p.detach().clone() for p in model.encoder.parameters()]
    running_mean = model.encoder.input_norm.running_mean.clone()
    settings = FinetuneSettings(epochs=2, batch_size=1, learning_rate=2e-5, validation_fraction=0, seed=1)
    run = train(model, prepared[:5], settings=settings, verbose=False)  # one window each
    assert run.train_loss_after < run.train_loss_before
    assert [entry["loss"] for entry in run.log_history if "loss" in entry]  # Trainer logged its training loss
    assert all(torch.equal(a, b) for a, b in zip(conv_before, model.feature_encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.encoder.parameters()))
    assert torch.equal(model.encoder.input_norm.running_mean, running_mean)  # batch norms at running statistics


def test_a_tiny_set_can_be_overfitted(base_model, prepared):
    model = fresh(base_model)
    tiny = [prepared[i] for i in (0, 1, 3)]  # one window each; MOS 1.4, 2.3, 4.3
    settings = FinetuneSettings(epochs=6, batch_size=1, learning_rate=2e-5, validation_fraction=0, seed=0)
    run = train(model, tiny, settings=settings, verbose=False)
    assert run.train_loss_before > 0.1
    assert run.train_loss_after < min(0.05, run.train_loss_before / 7), run
    scores = predict(DistillMOSClipRegressor(model), tiny)
    assert scores == pytest.approx([c.clip.target for c in tiny], abs=0.35)


def test_early_stopping_on_a_validation_split_restores_the_best_epoch(base_model, prepared):
    model = fresh(base_model)
    settings = FinetuneSettings(epochs=3, batch_size=4, learning_rate=1e-4, seed=0, early_stopping_patience=1)
    validation = prepared[4:6]
    run = train(model, prepared[:4], validation, settings=settings, verbose=False)
    evaluations = [entry["eval_loss"] for entry in run.log_history if "eval_loss" in entry]
    assert evaluations and run.best_validation_loss == pytest.approx(min(evaluations))
    regressor = DistillMOSClipRegressor(model)
    restored = predict(regressor, validation)
    mse = sum((p - c.clip.target) ** 2 for p, c in zip(restored, validation)) / len(validation)
    assert mse == pytest.approx(run.best_validation_loss, rel=1e-4, abs=1e-6)


# --- folds ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_folds_never_share_a_group(seed):
    rng = random.Random(seed)
    groups = [f"stimulus{rng.randrange(23)}" for _ in range(128)]
    folds = grouped_folds(groups, 5, seed)
    assert sorted(i for fold in folds for i in fold) == list(range(128))  # every row tested exactly once
    owners = {}
    for number, fold in enumerate(folds):
        for row in fold:
            assert owners.setdefault(groups[row], number) == number
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= max(groups.count(g) for g in set(groups))
    train_rows, validation_rows = grouped_holdout(groups, 0.2, seed)
    assert not {groups[i] for i in train_rows} & {groups[i] for i in validation_rows}
    assert validation_rows and sorted(train_rows + validation_rows) == list(range(128))


def test_folds_trained_side_by_side_give_the_serial_run_s_figures(base_model, prepared):
    """--cv's default on a CPU: one process per fold (spawned, one torch thread each), the same folds and results."""
    clips = prepared[:2] + prepared[5:7] + prepared[10:12]
    settings = FinetuneSettings(steps=4, learning_rate=1e-3, validation_fraction=0, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: then the two runs do the same arithmetic
    try:
        serial = cross_validate(fresh(base_model), clips, 3, settings, verbose=False)
    finally:
        torch.set_num_threads(threads)
    model = fresh(base_model)
    parallel = cross_validate(model, clips, 3, settings, verbose=False, jobs=2)
    assert parallel.fold_of == serial.fold_of
    assert [f["steps_run"] for f in parallel.folds] == [f["steps_run"] for f in serial.folds] == [4, 4, 4]
    np.testing.assert_allclose(parallel.predictions, serial.predictions, atol=1e-5, rtol=0)
    assert not np.allclose(parallel.predictions, parallel.baseline, atol=1e-3)  # the folds did train
    released = predict(DistillMOSClipRegressor(base_model), clips)
    np.testing.assert_allclose(predict(DistillMOSClipRegressor(model), clips), released, atol=1e-6, rtol=0)


def test_grouped_folds_refuse_fewer_groups_than_folds():
    with pytest.raises(ValueError, match="at least 3 groups, but there are 2"):
        grouped_folds(["a", "a", "b", "b"], 3, 0)


def test_cross_validation_is_grouped_and_the_same_seed_gives_the_same_figures(base_model, prepared):
    clips = prepared[:2] + prepared[5:7] + prepared[10:12]  # 3 groups of 2: GenSpeech dir1, dir3, TCD-VoIP MK
    settings = FinetuneSettings(epochs=1, batch_size=2, learning_rate=1e-4, validation_fraction=0, seed=7)
    model = fresh(base_model)
    first = cross_validate(model, clips, 3, settings, verbose=False)
    second = cross_validate(model, clips, 3, settings, verbose=False)
    groups = [c.clip.group for c in clips]
    for fold in range(3):
        test_groups = {g for g, f in zip(groups, first.fold_of) if f == fold}
        train_groups = {g for g, f in zip(groups, first.fold_of) if f != fold}
        assert test_groups and not test_groups & train_groups
    assert first.fold_of == second.fold_of
    np.testing.assert_allclose(first.predictions, second.predictions, atol=1e-6, rtol=0)
    # the baseline is the released model on the same clips, and cross-validation leaves the model as it found it
    released = predict(DistillMOSClipRegressor(base_model), clips)
    np.testing.assert_allclose(first.baseline, released, atol=1e-6, rtol=0)
    np.testing.assert_allclose(predict(DistillMOSClipRegressor(model), clips), released, atol=1e-6, rtol=0)
    assert max(abs(a - b) for a, b in zip(first.predictions, first.baseline)) > 1e-4  # it did train


# --- labels -----------------------------------------------------------------------------------------------------


def test_bad_rows_are_reported_by_name_and_lose_no_other_row(tmp_path, base_model, feature_extractor):
    good = rated_rows()[:4]
    rows = good + [
        {"file": str(tmp_path / "missing.wav"), "mos": 3.0, "group": "g9"},
        {"file": good[0]["file"], "mos": "nan", "group": "g9"},
        {"file": good[1]["file"], "mos": 7, "group": "g9"},
        {"file": good[2]["file"], "mos": "good", "group": "g9"},
        {"file": good[3]["file"], "mos": 2.0, "group": ""},
        {"file": good[0]["file"], "mos": 4.0, "group": "lonely"},
        {"file": good[1]["file"], "mos": "", "group": "g9"},  # unrated (e.g. a hidden reference): skipped, counted
    ]
    labels = load_labels(write_csv(tmp_path / "labels.csv", rows), group_column="group")
    assert labels.n_unrated == 1
    assert [c.label for c in labels.clips] == [r["mos"] for r in good] + [3.0, 4.0]
    problems = {(i.item, i.level): i.problem for i in labels.issues}
    name = lambda i: rows[i]["file"]  # noqa: E731
    assert "nan" in problems[(name(5), "error")].lower()
    assert "outside the scale 1..5" in problems[(name(6), "error")] and "--label-range" in problems[(name(6), "error")]
    assert "not a number" in problems[(name(7), "error")]
    assert "no value in the group column 'group'" in problems[(name(8), "error")]
    assert "only file of group 'lonely'" in problems[(name(9), "warning")]
    ready, decode_issues = prepare_clips(base_model, feature_extractor, labels.clips)
    assert [i.item for i in decode_issues] == [name(4)] and "no such file" in decode_issues[0].problem
    assert [c.clip.label for c in ready] == [r["mos"] for r in good] + [4.0]


def test_label_range_maps_other_scales_onto_the_mos_range(tmp_path):
    to_mos = label_mapper((0, 100), 1.0, 5.0)
    assert (to_mos(0), to_mos(50), to_mos(100)) == (1.0, 3.0, 5.0)
    rows = [{"file": r["file"], "mos": (r["mos"] - 1) * 25} for r in rated_rows()[:3]] + [
        {"file": rated_rows()[3]["file"], "mos": 101}]
    labels = load_labels(write_csv(tmp_path / "m.csv", rows, ("file", "mos")), label_range=(0, 100))
    assert [c.target for c in labels.clips] == pytest.approx([r["mos"] for r in rated_rows()[:3]])
    assert len(labels.issues) == 1 and "outside the scale 0..100" in labels.issues[0].problem


def test_label_sources_of_the_benchmark_read_the_same_rows(tmp_path, feature_extractor):
    """A save_to_disk folder and an audiofolder give the rows the CSV gives."""
    datasets = require_module("datasets")
    rows = rated_rows()[:3]
    from_csv = load_labels(write_csv(tmp_path / "l.csv", rows), group_column="group")
    saved = datasets.Dataset.from_dict(
        {"audio": [r["file"] for r in rows], "mos": [r["mos"] for r in rows], "group": [r["group"] for r in rows]}
    ).cast_column("audio", datasets.Audio())
    saved.save_to_disk(str(tmp_path / "saved"))
    from_saved = load_labels(str(tmp_path / "saved"), group_column="group")
    folder = tmp_path / "audiofolder"
    folder.mkdir()
    for index, row in enumerate(rows):
        (folder / f"clip{index}.wav").write_bytes(Path(row["file"]).read_bytes())
    write_csv(folder / "metadata.csv", [{"file_name": f"clip{i}.wav", "mos": r["mos"], "group": r["group"]}
                                        for i, r in enumerate(rows)], ("file_name", "mos", "group"))
    from_folder = load_labels(str(folder), group_column="group")
    expected = [decode_clip(c, feature_extractor) for c in from_csv.clips]
    for loaded in (from_saved, from_folder):
        assert [(c.label, c.group) for c in loaded.clips] == [(c.label, c.group) for c in from_csv.clips]
        assert not loaded.issues
        for clip, waveform in zip(loaded.clips, expected):  # undecoded dataset audio, through the same decode path
            np.testing.assert_array_equal(decode_clip(clip, feature_extractor), waveform)


# --- the command line and the saved model ----------------------------------------------------------------------


def test_cli_cross_validation_writes_results_with_the_released_models_figures(tmp_path, capsys):
    """MUSHRA-like labels (0..100): grouped 3-fold CV, correlations of both models, no RMSE off the MOS scale."""
    from distill_mos import DistillMOSScorer
    from distill_mos.finetune import agreement

    rows = [r for i, r in enumerate(rated_rows()) if i in (0, 1, 2, 5, 6, 10, 11)]  # 3 groups
    mushra = [{**r, "mos": (r["mos"] - 1) * 25} for r in rows]
    gone = {"file": str(tmp_path / "gone.wav"), "mos": 50, "group": "x"}
    labels_csv = write_csv(tmp_path / "labels.csv", mushra + [gone])
    status = finetune_main(["--labels", str(labels_csv), "--output-dir", str(tmp_path / "run"), "--cv", "3",
                            "--group-column", "group", "--label-range", "0", "100", "--epochs", "1",
                            "--validation-fraction", "0", "--quiet"])
    captured = capsys.readouterr()
    assert status == 1 and "gone.wav: no such file" in captured.err  # reported, and the other 7 rows were used
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["n"] == 7 and results["k"] == 3 and results["label_range"] == [0, 100]
    assert set(results["baseline"]) == set(results["cv"]) == {"pcc", "srcc", "ktau", "rmse"}
    assert results["baseline"]["rmse"] is None and results["cv"]["rmse"] is None  # not the MOS scale
    assert all(isinstance(results["cv"][key], float) for key in ("pcc", "srcc", "ktau"))
    assert [s["item"] for s in results["skipped"]] == [str(tmp_path / "gone.wav")]
    scorer = DistillMOSScorer.from_pretrained(str(ROOT), device="cpu")
    released = [r.mos for r in scorer.score_files([r["file"] for r in rows])]
    expected = agreement(released, [r["mos"] for r in mushra], mos_scale=False)
    for key in ("pcc", "srcc", "ktau"):
        assert results["baseline"][key] == pytest.approx(expected[key], abs=1e-4)
    assert agreement(released, [r["mos"] for r in rows], mos_scale=True)["rmse"] > 0  # RMSE on the MOS scale
    assert "fine-tuned, out of fold" in captured.out
    with open(tmp_path / "run" / "cv_predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    folds = {}
    for row in predictions:
        folds.setdefault(row["group"], set()).add(row["fold"])
    assert len(predictions) == 7 and all(len(f) == 1 for f in folds.values())


def test_cli_reports_bad_usage_without_a_traceback(tmp_path, capsys):
    status = finetune_main(["--labels", str(GENSPEECH / "labels.csv"), "--output-dir", str(tmp_path),
                            "--group-column", "no_such_column", "--quiet"])
    assert status == 2 and "no column 'no_such_column'" in capsys.readouterr().err
    status = finetune_main(["--labels", str(GENSPEECH / "labels.csv"), "--output-dir", str(tmp_path), "--cv", "2",
                            "--coverage", "90", "--quiet"])
    assert status == 2 and "--coverage must be between 0 and 1 (e.g. 0.9), got 90" in capsys.readouterr().err


def test_saved_model_is_a_complete_repository_that_scores_as_in_memory(tmp_path, monkeypatch, capsys):
    rows = rated_rows()[:3] + rated_rows()[10:12]
    result = finetune(write_csv(tmp_path / "labels.csv", rows, ("file", "mos")), tmp_path / "run",
                      settings=FinetuneSettings(epochs=1, batch_size=5, validation_fraction=0, learning_rate=3e-4),
                      verbose=False)
    folder = result.model_dir
    assert folder == tmp_path / "run" / "model"
    root_config = json.loads((ROOT / "config.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    for key in ("auto_map", "custom_pipelines"):
        assert config.get(key) == root_config.get(key)
    for name in ("configuration_distillmos.py", "modeling_distillmos.py", "feature_extraction_distillmos.py",
                 "pipeline_distillmos.py"):
        if (ROOT / name).is_file():
            assert (folder / name).read_bytes() == (ROOT / name).read_bytes()
    assert (folder / "model.safetensors").stat().st_size > 1_000_000
    assert json.loads((folder / "preprocessor_config.json").read_text())["sampling_rate"] == 16000
    card = (folder / "README.md").read_text()
    assert "base_model:" in card and str(tmp_path / "labels.csv") in card and "5 rated clips" in card

    files = [r["file"] for r in rows[:2]]
    waveforms = [_decoded(f) for f in files]
    from transformers import AutoFeatureExtractor, AutoModel

    auto_model = AutoModel.from_pretrained(str(folder), trust_remote_code=True).eval()
    auto_extractor = AutoFeatureExtractor.from_pretrained(str(folder), trust_remote_code=True)
    from feature_extraction_distillmos import DistillMOSFeatureExtractor

    extractor = DistillMOSFeatureExtractor.from_pretrained(str(ROOT))
    with torch.inference_mode():
        for waveform, sampling_rate in waveforms:
            in_memory = result.model(**extractor(waveform, sampling_rate=sampling_rate, return_tensors="pt")).mos
            reloaded = auto_model(**auto_extractor(waveform, sampling_rate=sampling_rate, return_tensors="pt")).mos
            torch.testing.assert_close(reloaded, in_memory, atol=1e-6, rtol=0)

    from distill_mos import DistillMOSScorer

    scorer = DistillMOSScorer.from_pretrained(str(folder), device="cpu")
    tuned = [r.mos for r in scorer.score_files(files)]
    released = [r.mos for r in DistillMOSScorer.from_pretrained(str(ROOT), device="cpu").score_files(files)]
    assert max(abs(a - b) for a, b in zip(tuned, released)) > 1e-3  # the trained weights were saved, not the base
    with torch.inference_mode():
        expected = [float(result.model(**extractor(w, sampling_rate=s, return_tensors="pt")).mos) for w, s in waveforms]
    assert tuned == pytest.approx(expected, abs=1e-6)

    from distill_mos.cli import main as cli_main

    capsys.readouterr()
    assert cli_main(["--model", str(folder), files[0]]) == 0
    out_rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert float(out_rows[0]["mos"]) == pytest.approx(tuned[0], abs=1e-4)

    from distill_mos.scorer import default_model_location

    monkeypatch.setenv("DISTILL_MOS_MODEL", str(folder))  # what the Space (and the CLI without --model) loads
    monkeypatch.delenv("DISTILL_MOS_SPACE_MODEL", raising=False)
    monkeypatch.delenv("DISTILL_MOS_WINDOW_HOP", raising=False)
    monkeypatch.setenv("DISTILL_MOS_DEVICE", "cpu")
    assert default_model_location() == str(folder)
    space = _space_app()
    if space is not None:
        space_scorer = space.load_scorer()
        assert space_scorer.model.name_or_path == str(folder)
        assert next(space_scorer.score_files(files[:1])).mos == pytest.approx(tuned[0], abs=1e-6)

    if "custom_pipelines" in root_config:
        from transformers import pipeline

        task = next(iter(root_config["custom_pipelines"]))
        scorer_pipeline = pipeline(task, model=str(folder), trust_remote_code=True)
        output = scorer_pipeline(files[0])
        output = output[0] if isinstance(output, list) else output
        assert output["mos"] == pytest.approx(tuned[0], abs=1e-4)


def _space_app():
    """space/app.py as a module (a script folder, not a package), or None without gradio."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        return None
    from test_space_app import load_space_app  # one loader, one copy of the app per session

    return load_space_app()


def test_model_card_quotes_the_cross_validated_figures_beside_the_released_model():
    cv = {"n": 128, "k": 5, "group_column": "stimulus",
          "baseline": {"pcc": 0.39, "srcc": 0.35, "ktau": 0.25, "rmse": None},
          "cv": {"pcc": 0.73, "srcc": 0.64, "ktau": 0.47, "rmse": None}}
    card = model_card(base_model="distill-mos/distill-mos-v7", data_name="codec-mushra.csv", n_clips=128,
                      n_train=110, n_validation=18, label_range=(0, 100), settings={"epochs": 10}, cv_results=cv)
    assert "base_model: distill-mos/distill-mos-v7" in card
    assert "codec-mushra.csv" in card and "128 rated clips" in card and "0..100" in card
    assert "| released Distill-MOS v7 | 128 | 0.390 | 0.350 | 0.250 | n/a |" in card
    assert "| fine-tuned (out of fold) | 128 | 0.730 | 0.640 | 0.470 | n/a |" in card
    assert "grouped by `stimulus`" in card
    no_cv = model_card(base_model="x", data_name="d", n_clips=3, n_train=3, n_validation=0, label_range=None,
                       settings={}, cv_results=None)
    assert "Not cross-validated" in no_cv


# --- the score interval of --cv, and the model trained after it carries it ---------------------------------------

QUICK = ["--steps", "2", "--batch-size", "4", "--validation-fraction", "0", "--learning-rate", "3e-4", "--quiet"]


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    """finetune_main(argv): (status, stdout, stderr); for module fixtures, where capsys is not available."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = finetune_main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def interval_runs(tmp_path_factory):
    """
    All 16 bundled clips as 0..100 ratings (3 groups): `--cv 3 --coverage 0.8`, then the run without --cv into the
    same folder with the same options. Returns (folder, cv stdout, cv stderr).
    """
    folder = tmp_path_factory.mktemp("interval")
    mushra = [{**r, "mos": (r["mos"] - 1) * 25} for r in rated_rows()]
    common = ["--labels", str(write_csv(folder / "labels.csv", mushra)), "--output-dir", str(folder / "run"),
              "--group-column", "group", "--label-range", "0", "100", *QUICK]
    status, out, err = _run_cli([*common, "--cv", "3", "--coverage", "0.8"])
    assert status == 0, err
    status, _, final_err = _run_cli(common)
    assert status == 0 and "no score interval" not in final_err, final_err
    return folder / "run", out, err


def test_cv_writes_the_split_conformal_interval_of_its_out_of_fold_residuals(interval_runs):
    from distill_mos.calibration import grouped_coverage

    run, out, _ = interval_runs
    results = json.loads((run / "results.json").read_text())
    interval = results["interval"]
    with open(run / "cv_predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # by hand: the labels (0..100) on 1..5, against the out-of-fold scores; the ceil((n + 1) x 0.8)-th smallest |r|
    residuals = [abs(1 + float(r["label"]) / 25 - float(r["fine_tuned_out_of_fold"])) for r in rows]
    rank = math.ceil((len(rows) + 1) * 0.8)
    assert (len(rows), rank) == (16, 14)
    assert interval["half_width"] == pytest.approx(sorted(residuals)[rank - 1], abs=1e-4)  # the CSV has 4 decimals
    # coverage measured on held-out groups, beside the nominal 0.8
    measured, folds = grouped_coverage(residuals, [r["group"] for r in rows], 0.8, folds=3)
    assert interval["empirical_coverage"] == pytest.approx(measured) and folds == interval["folds"] == 3
    assert (interval["coverage"], interval["size"], interval["groups"]) == (0.8, 16, 3)
    assert interval["group_column"] == "group" and interval["label_range"] == [0, 100]
    assert "out-of-fold" in interval["method"] and results["interval_error"] is None
    assert f"interval: score ± {interval['half_width']:.3f} MOS, nominal coverage 80%" in out  # after the table


def test_the_model_trained_after_cv_carries_its_interval_and_every_score_its_bounds(interval_runs):
    from distill_mos import DistillMOSScorer
    from distill_mos.calibration import MOSInterval
    from distill_mos.finetune.interval import FINAL_METHOD

    run, _, _ = interval_runs
    cross_validated = json.loads((run / "results.json").read_text())["interval"]
    scorer = DistillMOSScorer.from_pretrained(str(run / "model"), device="cpu")
    assert scorer.interval == MOSInterval(**{**cross_validated, "method": FINAL_METHOD})
    assert json.loads((run / "training.json").read_text())["interval"] == scorer.interval.to_config()
    half_width = cross_validated["half_width"]
    files = [r["file"] for r in rated_rows()[:3]]
    for result in scorer.score_files(files):
        assert (result.mos_low, result.mos_high) == pytest.approx(
            (max(1.0, result.mos - half_width), min(5.0, result.mos + half_width)))
    card = (run / "model" / "README.md").read_text()
    assert "## Score interval" in card and f"score ± {half_width:.3f} MOS" in card and "jackknife+" in card


def test_too_few_clips_give_no_interval_and_no_failure_and_a_calibrated_base_passes_none_on(tmp_path):
    """The README's worked example: 10 files in 2 groups, 2 folds; one fold's 5 clips cannot calibrate 90%."""
    from distill_mos import DistillMOSScorer
    from distill_mos.calibrate_cli import write_calibrated_copy
    from distill_mos.calibration import MOSInterval

    common = ["--labels", str(GENSPEECH / "labels.csv"), "--output-dir", str(tmp_path / "run"),
              "--group-column", "item", *QUICK]
    status, out, err = _run_cli([*common, "--cv", "2"])
    assert status == 0
    assert "note: no score interval: measuring coverage on held-out groups (2 grouped folds), one fold's " \
           "calibration part: 5 rated clips are too few for a 90% interval" in err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["interval"] is None and "too few" in results["interval_error"]
    assert "fine-tuned, out of fold" in out and "interval:" not in out  # the figures are still there

    # fine-tuning a model calibrated on other data: the new weights do not inherit its interval
    stale = MOSInterval(coverage=0.9, half_width=0.3, empirical_coverage=0.9, folds=5, data="other.csv", size=200,
                        groups=20)
    base = write_calibrated_copy(str(ROOT), None, stale, tmp_path / "calibrated")
    status, _, err = _run_cli([*common, "--model", str(base)])
    assert status == 0 and "note: the model carries no score interval: measuring coverage" in err
    assert DistillMOSScorer.from_pretrained(str(tmp_path / "run" / "model"), device="cpu").interval is None
    assert "mos_interval" not in json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert "## Score interval\n\nNone" in (tmp_path / "run" / "model" / "README.md").read_text()


def test_the_interval_is_carried_only_by_a_model_trained_as_the_folds_were():
    """Fold models of --steps 100 say nothing about the errors of a model trained 600 steps: no interval then."""
    from distill_mos.finetune.interval import FINAL_METHOD, carried_interval

    interval = {"coverage": 0.9, "half_width": 0.4, "empirical_coverage": 0.9, "folds": 5, "data": "t.csv",
                "size": 100, "groups": 20, "group_column": "item", "label_range": [1.0, 5.0], "method": "cv"}
    run = {"base_model": "m", "label_range": None, "group_column": "item",
           "settings": {**vars(FinetuneSettings()), "steps": 100}}
    carried, why_not = carried_interval({**run, "interval": interval}, run)
    assert why_not is None and carried.half_width == 0.4 and carried.method == FINAL_METHOD
    final = {**run, "settings": {**run["settings"], "steps": 600}}
    carried, why_not = carried_interval({**run, "interval": interval}, final)
    assert carried is None and "differs in settings" in why_not
    assert carried_interval(None, run) == (None, None)


# --- the defaults: optimizer steps, no validation split on small sets --------------------------------------------


def test_default_length_is_a_number_of_steps_whatever_the_set_size():
    defaults = FinetuneSettings()
    assert defaults.steps is None and defaults.epochs is None and defaults.batch_size == 1
    assert defaults.steps_for(50) == defaults.steps_for(128) == defaults.steps_for(500) == DEFAULT_STEPS
    assert FinetuneSettings(steps=40).steps_for(500) == 40
    # epochs, when asked for, grow with the set: ceil(epochs * ceil(n / batch))
    assert FinetuneSettings(epochs=6).steps_for(100) == 600
    assert FinetuneSettings(epochs=2, batch_size=8).steps_for(50) == 14
    with pytest.raises(ValueError, match="steps or as epochs, not both"):
        FinetuneSettings(steps=10, epochs=1).check()
    with pytest.raises(ValueError, match="train_layers"):
        FinetuneSettings(train_layers="conv").check()


def test_no_validation_split_by_default_below_the_small_set_size():
    defaults = FinetuneSettings()
    assert defaults.validation_fraction is None
    assert defaults.validation_fraction_for(50) == defaults.validation_fraction_for(SMALL_SET - 1) == 0
    assert defaults.validation_fraction_for(SMALL_SET) == LARGE_SET_VALIDATION_FRACTION
    assert FinetuneSettings(validation_fraction=0.2).validation_fraction_for(50) == 0.2  # asked for: given
    assert FinetuneSettings(validation_fraction=0).validation_fraction_for(10 * SMALL_SET) == 0


def test_training_runs_the_set_number_of_steps_on_every_clip_of_a_small_set(base_model, prepared):
    """Default validation on 6 clips of 3 groups: nothing held out; 2 steps on 1 clip and on 6 clips alike."""
    model = fresh(base_model)
    six = prepared[:2] + prepared[5:7] + prepared[10:12]
    for clips in (prepared[:1], six):
        run = fit(model, clips, FinetuneSettings(steps=2, seed=0), verbose=False, measure_loss=False)
        assert run.steps_run == 2 and run.n_train == len(clips) and run.n_validation == 0
    held = fit(model, six, FinetuneSettings(steps=1, validation_fraction=0.3, seed=0), verbose=False,
               measure_loss=False)
    assert held.n_validation > 0 and held.n_train + held.n_validation == 6  # an explicit share is held out


def test_which_layers_train_and_the_per_window_loss(base_model, prepared):
    model = fresh(base_model)
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    pooling_before = [p.detach().clone() for p in model.pooling.parameters()]
    train(model, prepared[:2], settings=FinetuneSettings(steps=2, learning_rate=1e-3, train_layers="pooling"),
          verbose=False, measure_loss=False)
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(pooling_before, model.pooling.parameters()))
    last = DistillMOSClipRegressor(model, train_layers="last")
    trained = {id(p) for p in last.parameters() if p.requires_grad}
    assert trained == {id(p) for p in list(model.encoder.layers[-1].parameters()) + list(model.pooling.parameters())}
    # per-window and per-clip loss: the same for a one-window clip, not for a clip of several windows
    long_clip = next(c for c in prepared if c.inputs.shape[0] > 1)
    for clip, same in ((prepared[0], True), (long_clip, False)):
        batch = WindowCollator()([{"inputs": clip.inputs, "labels": 3.0}])
        with torch.no_grad():
            losses = [DistillMOSClipRegressor(base_model, loss=loss)(**batch).loss for loss in ("clip", "window")]
        assert (abs(float(losses[0] - losses[1])) < 1e-7) == same, losses
    for parameter in base_model.parameters():
        parameter.requires_grad_(False)


# --- --search: nested inside each outer fold ------------------------------------------------------------------------


def test_search_never_sees_the_outer_test_fold(base_model, prepared, monkeypatch):
    """
    By construction: every clip any inner training or inner scoring gets is one of the outer fold's training clips;
    the chosen settings are recorded per fold and are grid candidates. (Training itself is stubbed out here; the
    search's real training runs in bench/finetune_benchmark.py --settings search.)
    """
    monkeypatch.setattr(search_module, "SEARCH_GRID", {"learning_rate": (1e-4, 3e-4), "steps": (1,)})
    clips = prepared[:2] + prepared[5:7] + prepared[10:12]  # 3 groups of 2
    outer_training: list[set[int]] = []
    seen = {"train": [], "predict": []}

    real_fit, real_predict = training_module.fit, search_module.predict

    def outer_fit(model, fold_clips, settings, **kwargs):
        if settings.search:  # the outer call (cross_validate's); the inner ones come with search off
            outer_training.append({id(c) for c in fold_clips})
        return real_fit(model, fold_clips, settings, **kwargs)

    def recording_train(model, train_clips, validation_clips=(), settings=None, **kwargs):
        """Records what it is given and skips the optimizer: the nesting, not the training, is under test."""
        seen["train"].append((len(outer_training) - 1, {id(c) for c in list(train_clips) + list(validation_clips)}))
        return TrainingRun(len(train_clips), len(validation_clips), settings.steps_for(len(train_clips)), 1.0,
                           None, None, None)

    def recording_predict(regressor, some_clips, batch_size=8):
        seen["predict"].append((len(outer_training) - 1, {id(c) for c in some_clips}))
        return real_predict(regressor, some_clips, batch_size)

    monkeypatch.setattr(training_module, "fit", outer_fit)
    monkeypatch.setattr(training_module, "train", recording_train)
    monkeypatch.setattr(search_module, "predict", recording_predict)
    result = cross_validate(fresh(base_model), clips, 3, FinetuneSettings(search=True, seed=3), verbose=False)

    assert len(outer_training) == 3
    for fold, training_ids in enumerate(outer_training):
        test_ids = {id(clips[i]) for i in range(len(clips)) if result.fold_of[i] == fold}
        assert test_ids and not test_ids & training_ids
    # 2 candidates x 2 inner folds (2 groups in each outer training part) + the final training, per outer fold
    assert len(seen["train"]) == 3 * (2 * 2 + 1) and len(seen["predict"]) == 3 * 2 * 2
    for fold, ids in seen["train"] + seen["predict"]:
        assert ids <= outer_training[fold]
    for summary in result.folds:
        assert summary["search"]["chosen"]["steps"] == 1
        assert summary["search"]["chosen"]["learning_rate"] in (1e-4, 3e-4)
        assert len(summary["search"]["candidates"]) == 2


# --- exactness: an untrained fine-tuned model is the released one ---------------------------------------------------


def test_untrained_cached_path_and_saved_repository_score_as_the_released_model(tmp_path, base_model,
                                                                              feature_extractor, prepared):
    """The cached-feature scores (what CV's baseline and every fold start from) and a saved untrained copy: 1e-6."""
    from distill_mos import DistillMOSScorer
    from distill_mos.finetune.export import save_model_repository

    files = [c.clip.audio for c in prepared]
    released = [r.mos for r in DistillMOSScorer.from_pretrained(str(ROOT), device="cpu").score_files(files)]
    cached = predict(DistillMOSClipRegressor(base_model), prepared)
    np.testing.assert_allclose(cached, released, atol=1e-6, rtol=0)
    model = fresh(base_model)
    run = train(model, prepared[:2], settings=FinetuneSettings(steps=1, learning_rate=1e-30, warmup=0),
                verbose=False, measure_loss=False)  # a fine-tuning run whose update is zero in float32
    assert run.steps_run == 1
    folder = save_model_repository(model, feature_extractor, tmp_path / "untrained", "card")
    saved = [r.mos for r in DistillMOSScorer.from_pretrained(str(folder), device="cpu").score_files(files)]
    np.testing.assert_allclose(saved, released, atol=1e-6, rtol=0)
