"""The transformers model against the real original (distillmos 0.9.1): parity, batching, loading, bad input."""

import warnings

import numpy as np
import pytest
import soundfile
import torch
from distill_mos.engine import PerCoreWindowExecutor
from conftest import GENSPEECH, ROOT, all_sample_files, genspeech_expected, original_cli_scores

SR = 16000
LENGTHS_S = [0.05, 1, 7.679, 7.68, 7.681, 8, 10.5, 30, 60]


def speech_like(num_samples: int) -> np.ndarray:
    """Real speech: the bundled GenSpeech clips played one after another, cut to length."""
    clips = [soundfile.read(p, dtype="float32")[0] for p in sorted(GENSPEECH.glob("audio/**/*.wav"))]
    joined = np.concatenate(clips)
    reps = int(np.ceil(num_samples / len(joined)))
    return np.tile(joined, reps)[:num_samples]


def noise(num_samples: int) -> np.ndarray:
    generator = np.random.default_rng(num_samples)
    return (0.1 * generator.standard_normal(num_samples)).astype(np.float32)


def original_score(original_model, waveform: np.ndarray) -> float:
    with torch.no_grad():
        return original_model(torch.from_numpy(waveform)[None]).item()


def our_score(model, feature_extractor, waveform, sampling_rate=SR) -> float:
    inputs = feature_extractor(waveform, sampling_rate=sampling_rate, return_tensors="pt")
    with torch.inference_mode():
        return model(**inputs).mos.item()


@pytest.mark.parametrize("signal", [noise, speech_like], ids=["noise", "speech"])
@pytest.mark.parametrize("seconds", LENGTHS_S)
def test_parity_with_original_on_every_length(original_model, model, feature_extractor, signal, seconds):
    waveform = signal(int(round(seconds * SR)))
    ours = our_score(model, feature_extractor, waveform)
    reference = original_score(original_model, waveform)
    assert abs(ours - reference) <= 1e-4, (seconds, ours, reference)


@pytest.mark.parametrize("path", all_sample_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_parity_with_original_cli_on_every_sample_file(scorer, original_file_scores, path):
    """48 kHz TCD-VoIP files are resampled on both sides: ours by the feature extractor, theirs by their CLI's code."""
    [result] = scorer.score_files([path])
    assert result.error is None
    assert abs(result.mos - original_file_scores[str(path)]) <= 1e-4


RATES = [8000, 11025, 22050, 24000, 44100, 48000]


@pytest.fixture(scope="module")
def rate_files(tmp_path_factory):
    """The same 9.8 s of speech (4 windows) as float WAV files at each rate of `RATES`: {rate: path}."""
    import torchaudio

    folder = tmp_path_factory.mktemp("rates")
    clip = torch.from_numpy(speech_like(int(9.8 * SR)))[None]
    files = {}
    for rate in RATES:
        files[rate] = folder / f"speech_{rate}.wav"
        soundfile.write(files[rate], torchaudio.transforms.Resample(SR, rate)(clip)[0].numpy(), rate, subtype="FLOAT")
    return files


@pytest.fixture(scope="module")
def original_rate_scores(rate_files):
    """The original CLI's own decode + `Resample(sr, 16000)` + model on each rate's file: {rate: MOS}."""
    scores = original_cli_scores(rate_files.values())
    return {rate: scores[str(path)] for rate, path in rate_files.items()}


@pytest.mark.parametrize("rate", RATES)
def test_parity_with_the_original_cli_at_every_sampling_rate(model, feature_extractor, scorer, rate_files,
                                                            original_rate_scores, rate):
    """Scores, not columns: the feature extractor's resampling + our model equal the original CLI's resampling + its
    model at each rate (max |delta| measured 4.8e-7 MOS on an AMD EPYC, AVX-512; 1e-4 is the documented parity)."""
    waveform, file_rate = soundfile.read(rate_files[rate], dtype="float32")
    assert file_rate == rate
    assert abs(our_score(model, feature_extractor, waveform, sampling_rate=rate) - original_rate_scores[rate]) <= 1e-4
    [result] = scorer.score_files([rate_files[rate]])
    assert result.sampling_rate == rate and len(result.window_scores) == 4
    assert abs(result.mos - original_rate_scores[rate]) <= 1e-4


def test_genspeech_dir3_gives_the_published_scores(scorer):
    expected = genspeech_expected()
    folder = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
    results = {r.path: r.mos for r in scorer.score_files(sorted(folder.glob("*.wav")))}
    assert len(results) == 6
    for path, mos in results.items():
        stem = path.rsplit("/", 1)[1][:-4]
        assert abs(mos - expected[stem]) <= 0.005, (stem, mos, expected[stem])


def test_padded_batch_gives_each_clip_its_single_clip_score(model, feature_extractor):
    lengths = [int(s * SR) for s in (0.5, 7.0, 7.68, 9.3, 12.0, 3.2)]
    clips = [speech_like(n + 1000 * i)[1000 * i :] for i, n in enumerate(lengths)]
    inputs = feature_extractor(clips, sampling_rate=SR, return_tensors="pt")
    assert inputs["input_values"].shape == (len(clips), max(lengths))
    with torch.inference_mode():
        batch = model(**inputs)
    for i, clip in enumerate(clips):
        single = our_score(model, feature_extractor, clip)
        assert abs(batch.mos[i].item() - single) <= 1e-5
        # per-window outputs line up with the clip's own windows
        alone = model(**feature_extractor(clip, sampling_rate=SR, return_tensors="pt"))
        count = int(batch.window_mask[i].sum())
        assert count == alone.window_scores.shape[1]
        torch.testing.assert_close(batch.window_scores[i, :count], alone.window_scores[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.window_start_times[i, :count], alone.window_start_times[0])
        assert torch.isnan(batch.window_scores[i, count:]).all()


def test_window_outputs_describe_the_windows(model, feature_extractor):
    clip = speech_like(int(10.5 * SR))
    with torch.inference_mode():
        out = model(**feature_extractor(clip, sampling_rate=SR, return_tensors="pt"))
    starts = out.window_start_times[0]
    # 10.5 s -> 2.82 s beyond one window -> 4 windows spread evenly from 0 to 2.82 s
    assert starts.tolist() == pytest.approx([0.0, 0.94, 1.88, 2.82], abs=1e-4)
    assert out.mos.item() == pytest.approx(out.window_scores[0].mean().item(), abs=1e-6)
    assert ((out.window_scores >= 1) & (out.window_scores <= 5)).all()


def fading_speech(seconds: float = 12.0) -> np.ndarray:
    """Speech fading by 20 dB per 0.864 s, the hop between its windows: every window has a peak ~10x its
    neighbour's, so normalizing by one peak per chunk of windows instead of per window changes the scores."""
    clip = speech_like(int(seconds * SR))
    return (clip * 10 ** (-np.arange(clip.size) / SR / 0.864)).astype(np.float32)


@pytest.fixture(scope="module")
def fading_reference(original_model):
    """The original's MOS of `fading_speech()` and its score of each window (each window alone through its model)."""
    from modeling_distillmos import plan_windows

    clip = torch.from_numpy(fading_speech())[None]
    starts = plan_windows(clip.shape[1], 122880, SR)
    with torch.no_grad():
        windows = [original_model(clip[:, s : s + 122880]).item() for s in starts]
        return original_model(clip).item(), windows


@pytest.mark.parametrize("window_threads", [True, False], ids=["window-per-core", "batched"])
@pytest.mark.parametrize("window_batch_size", [1, 2, 8])
def test_windows_scored_in_chunks_equal_the_original(model, fading_reference, window_batch_size, window_threads):
    """6 windows in chunks of 1, 2 and 8. `batched` (no worker threads, as on GPU or in training) sends whole chunks
    through the network, so each window of a chunk must get its own peak; max |delta| measured 4.8e-7 MOS."""
    original_mos, original_windows = fading_reference
    clip = torch.from_numpy(fading_speech())[None]
    peaks = [float(clip[0, s : s + 122880].abs().max()) for s in (0, 13824, 27648)]
    assert peaks[0] > 4 * peaks[1] > 16 * peaks[2]  # the test input does what it is for
    saved = model.window_executor
    model.window_executor = PerCoreWindowExecutor(torch.get_num_threads()) if window_threads else None
    try:
        with torch.inference_mode():
            out = model(clip, window_batch_size=window_batch_size)
    finally:
        model.window_executor = saved
    assert out.window_scores.shape == (1, 6)
    assert out.window_scores[0].tolist() == pytest.approx(original_windows, abs=1e-4)
    assert abs(out.mos.item() - original_mos) <= 1e-4


def test_auto_classes_load_offline_and_round_trip(tmp_path, monkeypatch, feature_extractor, model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    config = AutoConfig.from_pretrained(str(ROOT), trust_remote_code=True)
    assert config.model_type == "distillmos" and config.window_length == 122880
    auto_model = AutoModel.from_pretrained(str(ROOT), trust_remote_code=True).eval()
    auto_fe = AutoFeatureExtractor.from_pretrained(str(ROOT), trust_remote_code=True)
    assert type(auto_model).__name__ == "DistillMOSModel"
    assert type(auto_fe).__name__ == "DistillMOSFeatureExtractor"

    clip = speech_like(int(9 * SR))
    before = our_score(auto_model, auto_fe, clip)
    assert before == pytest.approx(our_score(model, feature_extractor, clip), abs=1e-6)

    auto_model.save_pretrained(tmp_path)
    auto_fe.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(str(tmp_path), trust_remote_code=True).eval()
    reloaded_fe = AutoFeatureExtractor.from_pretrained(str(tmp_path), trust_remote_code=True)
    assert our_score(reloaded, reloaded_fe, clip) == before


def test_labels_give_a_loss(model, feature_extractor):
    inputs = feature_extractor([speech_like(SR), speech_like(2 * SR)], sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, labels=torch.tensor([3.0, 4.0]))
    expected = ((out.mos - torch.tensor([3.0, 4.0])) ** 2).mean()
    assert out.loss.item() == pytest.approx(expected.item())


# --- feature extractor ------------------------------------------------------------------------------------------


def test_integer_pcm_is_scaled_like_a_decoder(model, feature_extractor):
    clip = speech_like(3 * SR)
    pcm16 = np.round(clip * 32767).astype(np.int16)
    as_float = pcm16.astype(np.float32) / 32768
    np.testing.assert_array_equal(
        feature_extractor(pcm16, sampling_rate=SR)["input_values"][0], as_float
    )
    pcm32 = pcm16.astype(np.int32) << 16
    np.testing.assert_allclose(feature_extractor(pcm32, sampling_rate=SR)["input_values"][0], as_float, atol=1e-7)


def test_accepts_numpy_torch_and_lists_alike(feature_extractor):
    clip = speech_like(SR // 2)
    reference = feature_extractor(clip, sampling_rate=SR)["input_values"]
    for variant in (torch.from_numpy(clip), clip.astype(np.float64), clip.tolist(), torch.from_numpy(clip).half()):
        values = feature_extractor(variant, sampling_rate=SR)["input_values"]
        np.testing.assert_allclose(values, reference, atol=1e-3 if isinstance(variant, torch.Tensor) and variant.dtype == torch.float16 else 1e-7)


@pytest.mark.parametrize("rate", RATES)
def test_resampling_keeps_pitch_level_and_duration(feature_extractor, rate):
    """A 1 kHz tone of 2 s at `rate` comes out as a 1 kHz tone of 2 s at 16 kHz with the same amplitude (whichever
    resampler; equality with the original's is `test_parity_with_the_original_cli_at_every_sampling_rate`)."""
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(2 * rate) / rate)).astype(np.float32)
    values = feature_extractor(tone, sampling_rate=rate)["input_values"][0]
    assert values.shape == (2 * SR,)
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(2 * SR) / SR)
    # away from the edges (the sinc kernel's zero padding): measured max |error| 5.1e-4 at 11.025 kHz, <= 2.2e-4 at
    # the other rates (AMD EPYC; float32 sinc interpolation, CPU-independent to this scale): 4x margin
    np.testing.assert_allclose(values[200:-200], expected[200:-200], rtol=0, atol=2e-3)


def test_refuses_other_rates_when_resampling_is_off():
    from feature_extraction_distillmos import DistillMOSFeatureExtractor

    with pytest.raises(ValueError, match="resampling is off"):
        DistillMOSFeatureExtractor(resample=False)(speech_like(SR), sampling_rate=8000)


@pytest.mark.parametrize(
    "clip, kwargs, message",
    [
        (np.zeros(0, np.float32), {"sampling_rate": SR}, "empty"),
        (np.zeros((2, SR), np.float32), {"sampling_rate": SR}, r"1-D mono.*shape \(2, 16000\).*x\[0\]"),
        (np.array([0.1, np.nan, 0.2] * 100, np.float32), {"sampling_rate": SR}, "NaN or infinite"),
        (np.array([0.1, np.inf, 0.2] * 100, np.float32), {"sampling_rate": SR}, "NaN or infinite"),
        (np.ones(SR, np.float32), {}, "sampling_rate is required"),
        (np.ones(SR, np.float32), {"sampling_rate": 0}, "positive whole number"),
        (np.ones(SR, np.float32), {"sampling_rate": 16000.5}, "positive whole number"),
        (np.ones(SR, np.float32), {"sampling_rate": "16k"}, "number of samples per second"),
        (np.ones(SR, np.complex64), {"sampling_rate": SR}, "unsupported sample type complex64"),
        (np.ones(SR, np.uint32), {"sampling_rate": SR}, "unsupported sample type uint32"),
        ([1, 2, 3], {"sampling_rate": SR}, "list of integers"),
        ("speech.wav", {"sampling_rate": SR}, "must be a numpy array"),
    ],
    ids=["empty", "2-D", "nan", "inf", "no-rate", "zero-rate", "fractional-rate", "string-rate", "complex", "uint32",
         "int-list", "path"],
)
def test_bad_input_raises_a_clear_value_error(feature_extractor, clip, kwargs, message):
    with pytest.raises(ValueError, match=message):
        feature_extractor(clip, **kwargs)


def test_bad_clip_in_a_batch_is_named(feature_extractor):
    with pytest.raises(ValueError, match="clip 1 contains 1 NaN"):
        feature_extractor([np.ones(100, np.float32), np.array([0.0, np.nan], np.float32)], sampling_rate=SR)


@pytest.mark.parametrize(
    "mask_fn, message",
    [
        (lambda m: m[:, :-1], "must match"),
        (lambda m: torch.cat([m, m]), "must match"),
        (lambda m: m * 2, "only 0"),
        (lambda m: m.index_fill(1, torch.tensor([5]), 0), "no gaps, no left padding"),
        (lambda m: torch.zeros_like(m), "empty"),
    ],
    ids=["short", "rows", "values", "gap", "all-zero"],
)
def test_mismatched_attention_mask_raises(model, feature_extractor, mask_fn, message):
    inputs = feature_extractor(speech_like(SR), sampling_rate=SR, return_tensors="pt")
    with pytest.raises(ValueError, match=message):
        model(inputs["input_values"], attention_mask=mask_fn(inputs["attention_mask"]))


def test_model_refuses_bad_tensors(model):
    with pytest.raises(ValueError, match=r"shape \(batch, samples\)"):
        model(torch.zeros(SR))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(torch.full((1, SR), float("nan")))
    with pytest.raises(ValueError, match="floating point"):
        model(torch.zeros((1, SR), dtype=torch.int16))


def test_silent_clip_scores_finite_like_the_original_and_warns(original_model, model, feature_extractor):
    silence = np.zeros(3 * SR, np.float32)
    with pytest.warns(UserWarning, match="silent"):
        inputs = feature_extractor(silence, sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        ours = model(**inputs).mos.item()
    assert np.isfinite(ours)
    assert abs(ours - original_score(original_model, silence)) <= 1e-4


def test_non_silent_clip_does_not_warn(feature_extractor):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feature_extractor(speech_like(SR), sampling_rate=SR)
