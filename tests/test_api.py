"""The Python API (DistillMOSScorer) and the Hugging Face datasets helper."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from conftest import DATA, GENSPEECH, ROOT, require_module

from distill_mos import AudioFileError, DistillMOSScorer, add_mos_column, default_model_location, load_audio

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"


def test_default_model_location_is_this_checkout(monkeypatch):
    monkeypatch.delenv("DISTILL_MOS_MODEL", raising=False)
    assert default_model_location() == str(ROOT)
    monkeypatch.setenv("DISTILL_MOS_MODEL", "/somewhere/else")
    assert default_model_location() == "/somewhere/else"


MODEL_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")


def _model_folder(folder, weights=True):
    """A folder holding the model files (links to this checkout's), or a git-lfs pointer instead of the weights."""
    folder.mkdir(parents=True)
    for name in MODEL_FILES:
        if name == "model.safetensors" and not weights:
            (folder / name).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 16000000\n")
        else:
            (folder / name).symlink_to(ROOT / name)
    return folder


def test_model_lookup_order_is_the_documented_one(monkeypatch, tmp_path):
    """$DISTILL_MOS_MODEL, this checkout, <prefix>/share/distill-mos (pip install's copy), the Hub id: as README.md
    says (`test_readme.py` checks the README's wording against the same order)."""
    import distill_mos.scorer as scorer_module

    checkout = tmp_path / "checkout"
    monkeypatch.setattr(scorer_module, "__file__", str(checkout / "distill_mos" / "scorer.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    share = tmp_path / "prefix" / "share" / "distill-mos"
    monkeypatch.delenv("DISTILL_MOS_MODEL", raising=False)

    assert default_model_location() == "distill-mos/distill-mos-v7"  # nothing local: the Hub
    _model_folder(share)
    assert default_model_location() == str(share)  # the installed copy
    _model_folder(checkout, weights=False)
    assert default_model_location() == str(share)  # a checkout without git-lfs weights is passed over
    (checkout / "model.safetensors").unlink()
    (checkout / "model.safetensors").symlink_to(ROOT / "model.safetensors")
    assert default_model_location() == str(checkout)  # the checkout before the installed copy
    monkeypatch.setenv("DISTILL_MOS_MODEL", str(tmp_path / "elsewhere"))
    assert default_model_location() == str(tmp_path / "elsewhere")  # the variable before everything


def test_from_pretrained_scores_like_the_model(scorer):
    loaded = DistillMOSScorer.from_pretrained(device="cpu")
    assert loaded.device.type == "cpu"
    waveform, rate = soundfile.read(DIR3 / "lpcnq.wav", dtype="float32")
    assert loaded.score_array(waveform, rate).mos == pytest.approx(scorer.score_array(waveform, rate).mos, abs=1e-6)


def test_score_array_accepts_pcm_and_any_rate(scorer, original_model):
    import torchaudio

    waveform, rate = soundfile.read(DIR3 / "opus.wav", dtype="int16")
    as_float = waveform.astype(np.float32) / 32768
    assert scorer.score_array(waveform, rate).mos == pytest.approx(scorer.score_array(as_float, rate).mos, abs=1e-6)
    upsampled = torchaudio.transforms.Resample(16000, 48000)(torch.from_numpy(as_float)[None])[0].numpy()
    at_48k = scorer.score_array(upsampled, 48000).mos
    # the original's own resampling and model on the same 48 kHz array (measured |delta| 2.4e-7, AMD EPYC)
    back = torchaudio.transforms.Resample(48000, 16000)(torch.from_numpy(upsampled)[None])
    with torch.no_grad():
        assert abs(at_48k - original_model(back).item()) <= 1e-4
    # same speech, resampled twice: measured -0.0163 MOS against the 16 kHz original (AMD EPYC); 2x margin
    assert abs(at_48k - scorer.score_array(as_float, rate).mos) <= 0.035


def test_score_arrays_with_rates_per_clip(scorer):
    a = soundfile.read(DIR3 / "ref.wav", dtype="float32")[0]
    b = soundfile.read(DIR3 / "speex.wav", dtype="float32")[0]
    scores = scorer.score_arrays([a, b], [16000, 16000])
    assert [s.mos for s in scores] == pytest.approx([scorer.score_array(a, 16000).mos, scorer.score_array(b, 16000).mos], abs=1e-5)
    with pytest.raises(ValueError, match="2 clips but 1 sampling rates"):
        scorer.score_arrays([a, b], [16000])
    with pytest.raises(ValueError, match="clip 1 is empty"):
        scorer.score_arrays([a, np.zeros(0, np.float32)], 16000)


def test_silent_array_warns_once_with_its_name(scorer):
    with pytest.warns(UserWarning, match="the clip is silent") as caught:
        score = scorer.score_array(np.zeros(16000, np.float32), 16000)  # 1 s: not "very short" too
    assert len(caught) == 1 and np.isfinite(score.mos)


def test_fast_mode_uses_fewer_windows(model, feature_extractor):
    waveform = np.concatenate([soundfile.read(p, dtype="float32")[0] for p in sorted(DIR3.glob("*.wav"))] * 2)
    exact = DistillMOSScorer(model, feature_extractor).score_array(waveform, 16000)
    fast = DistillMOSScorer(model, feature_extractor, window_hop=4.0).score_array(waveform, 16000)
    assert (len(exact.window_scores), len(fast.window_scores)) == (87, 23)  # 93.6 s: 1 s vs 4 s apart at most
    assert np.diff(fast.window_start_times).max() <= 4.0 + 1e-6
    # 18 clips of different codecs spliced twice (quality changes every ~8 s, the worst case for sparse windows):
    # measured +0.1031 MOS (AMD EPYC); a property of the window plan, float noise across CPUs is ~1e-6
    assert fast.mos - exact.mos == pytest.approx(0.1031, abs=0.002)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(AudioFileError, match=r"missing\.wav: no such file"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "notes.mp3").write_text("not audio")
    with pytest.raises(AudioFileError, match=r"notes\.mp3: not a readable audio file"):
        load_audio(tmp_path / "notes.mp3")
    with pytest.raises(AudioFileError, match="is a directory"):
        load_audio(tmp_path)


def test_long_batch_is_split_to_bound_padding():
    from distill_mos.scorer import _length_batches

    lengths = [100, 5, 10_000, 7, 9_000]
    batches = _length_batches(lengths, batch_size=3, max_padded_samples=12_000)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 12_000
    assert [2] in batches and [4] in batches  # the two long clips cannot share a batch


@pytest.fixture(scope="module")
def audio_dataset(tmp_path_factory):
    """A local datasets.Dataset with an Audio column: wav at 16 and 48 kHz, flac, mp3, one broken file."""
    datasets = require_module("datasets")
    folder = tmp_path_factory.mktemp("dataset")
    files = [
        str(DIR3 / "ref.wav"),
        str(DATA / "tcdvoip/audio/Test_Set/NOISE/C_05_NOISE_MK.wav"),
    ]
    for suffix in ("flac", "mp3"):
        target = folder / f"melp.{suffix}"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(DIR3 / "melp.wav"), str(target)], check=True)
        files.append(str(target))
    dataset = datasets.Dataset.from_dict({"audio": files, "path": files})
    return dataset.cast_column("audio", datasets.Audio())


def test_add_mos_column_scores_a_dataset_like_the_files(scorer, audio_dataset):
    scored = add_mos_column(audio_dataset, scorer=scorer, batch_size=3)
    expected = {r.path: r.mos for r in scorer.score_files(audio_dataset["path"])}
    assert scored.column_names == ["audio", "path", "mos", "mos_error", "mos_provenance"]
    for path, mos, error in zip(scored["path"], scored["mos"], scored["mos_error"]):
        assert error is None
        assert mos == pytest.approx(expected[path], abs=1e-5), path  # same decode route: measured 0


def test_add_mos_column_with_windows_and_other_names(scorer, audio_dataset):
    renamed = audio_dataset.rename_column("audio", "speech").select([0])
    scored = add_mos_column(renamed, scorer=scorer, audio_column="speech", column="quality", windows=True)
    row = scored[0]
    assert row["quality_window_start_times"] == pytest.approx([0.0, 0.12], abs=1e-3)  # 7.8 s clip: two windows
    assert np.mean(row["quality_window_scores"]) == pytest.approx(row["quality"], abs=1e-5)
    with pytest.raises(ValueError, match="no column 'audio'"):
        add_mos_column(renamed, scorer=scorer)


def test_add_mos_column_keeps_going_past_a_bad_row(scorer):
    datasets = require_module("datasets")
    good = soundfile.read(DIR3 / "opus.wav", dtype="float32")[0]
    # plain {"array", "sampling_rate"} rows (no Audio feature): one good, one empty
    plain = datasets.Dataset.from_list([{"audio": {"array": good.tolist(), "sampling_rate": 16000}},
                                        {"audio": {"array": [], "sampling_rate": 16000}}])
    scored = add_mos_column(plain, scorer=scorer)
    assert scored["mos"][0] == pytest.approx(scorer.score_array(good, 16000).mos, abs=1e-5)
    assert scored["mos"][1] is None and "empty" in scored["mos_error"][1]


def test_add_mos_column_survives_unreadable_files(scorer, tmp_path):
    datasets = require_module("datasets")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_text("not audio at all")
    files = [str(DIR3 / "lpcnq.wav"), str(tmp_path / "missing.wav"), str(corrupt), str(DIR3 / "speex.wav")]
    dataset = datasets.Dataset.from_dict({"audio": files}).cast_column("audio", datasets.Audio())
    scored = add_mos_column(dataset, scorer=scorer, batch_size=4)
    assert scored.features["audio"] == dataset.features["audio"]  # the column is left as it was
    assert scored["mos"][0] == pytest.approx(next(scorer.score_files([files[0]])).mos, abs=1e-5)
    assert scored["mos"][3] == pytest.approx(next(scorer.score_files([files[3]])).mos, abs=1e-5)
    assert scored["mos"][1] is None and scored["mos_error"][1] == "no such file"
    assert scored["mos"][2] is None and scored["mos_error"][2].startswith("not a readable audio file")


def test_decode_bytes_matches_load_audio():
    from distill_mos.audio import decode_bytes

    path = DATA / "tcdvoip/audio/Test_Set/NOISE/C_09_NOISE_MK.wav"
    from_bytes = decode_bytes(path.read_bytes(), name=path.name)
    from_file = load_audio(path)
    np.testing.assert_array_equal(from_bytes.waveform, from_file.waveform)
    assert from_bytes.sampling_rate == from_file.sampling_rate == 48000
    with pytest.raises(AudioFileError, match="x.wav: file is empty"):
        decode_bytes(b"", name="x.wav")
