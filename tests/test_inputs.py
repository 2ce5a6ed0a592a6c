"""Feature extractor and API input handling: per-clip rates, array layouts, numpy masks, bounded resampling."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT


def _speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise with a speech-like envelope, at `rate`."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * rate)
    envelope = 0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi * seconds, samples)) ** 2
    return (0.2 * rng.standard_normal(samples) * envelope).astype(np.float32)


def _original_resampled_score(original_model, clip: np.ndarray, rate: int) -> float:
    """The original CLI's procedure: torchaudio Resample(rate, 16000), then its model."""
    import torchaudio

    x = torch.from_numpy(clip)[None]
    if rate != 16000:
        x = torchaudio.transforms.Resample(rate, 16000)(x)
    with torch.no_grad():
        return original_model(x).item()


def test_one_sampling_rate_per_clip(feature_extractor, model, original_model):
    rates = [48000, 16000, 22050]
    clips = [_speech_like(s, r, seed) for seed, (s, r) in enumerate(zip([3.0, 9.5, 2.0], rates))]
    batch = feature_extractor(clips, sampling_rate=rates, return_tensors="pt")
    with torch.inference_mode():
        together = model(**batch).mos
        alone = [float(model(**feature_extractor(c, sampling_rate=r, return_tensors="pt")).mos) for c, r in zip(clips, rates)]
    for index, (clip, rate) in enumerate(zip(clips, rates)):
        assert abs(float(together[index]) - alone[index]) < 1e-5  # measured 0 to 5e-7 (padding, attention mask)
        assert abs(alone[index] - _original_resampled_score(original_model, clip, rate)) <= 1e-4
    with pytest.raises(ValueError, match="got 3 clip\\(s\\) but 2 sampling rates"):
        feature_extractor(clips, sampling_rate=[48000, 16000])
    with pytest.raises(ValueError, match="sampling_rate must be a positive whole number of Hz, got -5"):
        feature_extractor(clips, sampling_rate=[48000, -5, 16000])


def test_two_dimensional_arrays_get_a_hint_for_their_layout(feature_extractor):
    samples_by_channels = np.zeros((48000, 2), dtype=np.float32)  # what soundfile.read returns
    with pytest.raises(ValueError) as error:
        feature_extractor(samples_by_channels, sampling_rate=16000)
    assert str(error.value) == (
        "the clip must be a 1-D mono waveform, got an array of shape (48000, 2). It looks like (samples, channels), as "
        "soundfile.read returns: pick one channel (x[:, 0]) or average them (x.mean(axis=1))."
    )
    with pytest.raises(ValueError) as error:
        feature_extractor(samples_by_channels.T, sampling_rate=16000)
    assert "For multi-channel (channels, samples) audio pick one channel (x[0]) or average them (x.mean(axis=0))" in str(
        error.value
    )


def test_numpy_inputs_and_attention_mask(feature_extractor, model):
    clips = [_speech_like(2.0, 16000, 1), _speech_like(9.0, 16000, 2)]
    as_numpy = feature_extractor(clips, sampling_rate=16000, return_tensors="np")
    as_torch = feature_extractor(clips, sampling_rate=16000, return_tensors="pt")
    assert isinstance(as_numpy["attention_mask"], np.ndarray)
    with torch.inference_mode():
        expected = model(**as_torch).mos
        # numpy mask with a tensor waveform, and both as numpy
        mixed = model(input_values=as_torch["input_values"], attention_mask=as_numpy["attention_mask"]).mos
        both = model(**as_numpy).mos
    assert torch.equal(mixed, expected) and torch.equal(both, expected)


@pytest.mark.parametrize("rates", ["16000", None, b"16000"])
def test_score_arrays_rejects_a_rate_that_is_not_an_int_or_a_list(scorer, rates):
    with pytest.raises(ValueError, match="sampling_rates must be one int \\(Hz\\) for all clips or a list of ints"):
        scorer.score_arrays([np.zeros(16000, dtype=np.float32)], rates)


def test_score_arrays_with_one_rate_per_clip(scorer):
    clips = [_speech_like(2.0, 44100, 3), _speech_like(2.0, 16000, 4)]
    together = scorer.score_arrays(clips, [44100, 16000])
    assert [s.mos for s in together] == pytest.approx([scorer.score_array(c, r).mos for c, r in zip(clips, [44100, 16000])], abs=1e-5)


def test_forged_rates_are_refused_with_the_rate_and_a_hint(scorer, tmp_path):
    from feature_extraction_distillmos import resampling_cost

    path = tmp_path / "forged.wav"
    sf.write(path, np.zeros(2000, dtype=np.int16), 800_144, subtype="PCM_16")  # a 4 KB file claiming 800,144 Hz
    result = next(scorer.score_files([path]))
    assert result.mos is None
    assert result.error == (
        "a sampling rate of 800144 Hz cannot be resampled to 16000 Hz at a sane cost (the rates share no large common "
        "factor: a 50.6 M-value kernel, 50617 taps a sample); convert the audio first, e.g. "
        "`ffmpeg -i in.wav -ar 16000 out.wav`."
    )
    # every usual rate stays well inside the bounds
    for rate in (8000, 11025, 12000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000, 384000):
        kernel, taps, _ = resampling_cost(rate, 16000, rate)
        assert kernel <= 300_000 and taps <= 600, rate


def test_resampling_work_is_bounded_by_the_clip_length():
    from feature_extraction_distillmos import _check_resampling_cost

    _check_resampling_cost(44100, 16000, 44100 * 3600)  # an hour is fine
    with pytest.raises(ValueError, match=r"resampling 144000 s of audio from 44100 Hz to 16000 Hz would take \d+ G"):
        _check_resampling_cost(44100, 16000, 44100 * 144_000)


@pytest.mark.parametrize("rate", [800_144, 8_000_144])
def test_the_guard_holds_under_a_memory_cap(tmp_path, rate):
    """
    With 1 GB of address space to spare, the forged rate must be refused by the guard before any allocation: without
    the guard torchaudio's kernel alone needs 1.5 GB (800,144 Hz) or 4 GB (8,000,144 Hz), and the process fails with
    an allocation error instead of this ValueError.
    """
    script = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np, torch, torchaudio
        from feature_extraction_distillmos import DistillMOSFeatureExtractor
        extractor = DistillMOSFeatureExtractor()
        extractor(np.zeros(16000, dtype=np.float32), sampling_rate=44100)  # warm up the allocator and torchaudio
        with open("/proc/self/status") as status:
            size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
        spare = 1 << 30
        resource.setrlimit(resource.RLIMIT_AS, (size_kb * 1024 + spare, resource.RLIM_INFINITY))
        try:
            extractor(np.zeros(2000, dtype=np.float32), sampling_rate={rate})
        except ValueError as error:
            print("refused:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"refused: a sampling rate of {rate} Hz cannot be resampled to 16000 Hz at a sane cost")


def test_overflow_in_resampling_is_reported_as_such(feature_extractor):
    rng = np.random.default_rng(0)
    loud = (np.sign(rng.standard_normal(44100)) * 3.4e38).astype(np.float32)  # finite, near float32's maximum
    with pytest.raises(ValueError) as error:
        feature_extractor(loud, sampling_rate=44100)
    assert str(error.value) == (
        "the clip overflowed while resampling from 44100 Hz to 16000 Hz: its samples reach 3.4e+38, far outside "
        "[-1, 1] (float audio must be scaled to [-1, 1]); rescale it."
    )
