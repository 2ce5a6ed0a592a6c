"""Input checks fire on audio a speech-quality score means little for, and stay quiet on speech (issue 19, point 2)."""

import numpy as np
import pytest
from conftest import GENSPEECH, ROOT, TCDVOIP, require_module

require_module("silero_vad")
require_module("pyloudnorm")

from feature_extraction_distillmos import resample  # noqa: E402

from distill_mos.audio import load_audio  # noqa: E402
from distill_mos.checks import CHECK_COLUMNS, check_audio  # noqa: E402

DIR1 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir1"
NOISE = TCDVOIP / "audio/Test_Set/NOISE"
RATE = 16000


def kinds(checks) -> set[str]:
    """Which checks gave a warning: speech, loudness, clipping, bandwidth."""
    words = {"speech in": "speech", "LUFS": "loudness", "no audible": "loudness", "clipped": "clipping",
             "band-limited": "bandwidth"}
    return {kind for warning in checks.warnings for word, kind in words.items() if word in warning}


def speech(path=DIR1 / "ref.wav"):
    decoded = load_audio(path)
    return decoded.waveform, decoded.sampling_rate


@pytest.mark.parametrize("path", sorted((GENSPEECH / "audio").rglob("*.wav")) + sorted((TCDVOIP / "audio").rglob("*.wav")),
                         ids=lambda p: p.relative_to(ROOT / "tests/data").as_posix())
def test_bundled_speech_passes_every_check_but_melp_is_narrowband(path):
    checks = check_audio(*speech(path))
    expected = {"bandwidth"} if path.stem == "melp" else set()  # MELP is a narrowband (4 kHz) codec
    assert kinds(checks) == expected, checks
    assert 0.45 < checks.speech_share <= 1 and -30 < checks.loudness_lufs < -24 and checks.clipped_share == 0


def tone(frequencies, seconds=6.0, amplitude=0.3, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude / len(frequencies) * sum(np.sin(2 * np.pi * f * t) for f in frequencies)).astype(np.float32)


def test_a_tone_and_a_chord_are_not_speech_and_not_clipped():
    for signal in (tone([440.0]), tone([261.6, 329.6, 392.0]), tone([50.0], amplitude=0.9)):
        checks = check_audio(signal, RATE)
        assert "speech" in kinds(checks) and checks.speech_share < 0.1, checks
        assert "clipping" not in kinds(checks)  # a sine's crest is not a flat top, even at 50 Hz


def test_noise_is_not_speech_but_has_full_bandwidth():
    noise = np.random.default_rng(0).normal(0, 0.1, 6 * 48000).astype(np.float32)
    checks = check_audio(noise, 48000)
    assert "speech" in kinds(checks) and checks.speech_share < 0.1
    assert "bandwidth" not in kinds(checks) and checks.bandwidth_hz > 20000
    assert "clipping" not in kinds(checks) and "loudness" not in kinds(checks)


def test_clicks_in_silence_are_not_speech_nor_clipping():
    clicks = np.zeros(6 * RATE, np.float32)
    clicks[::RATE // 2] = 1.0  # full-scale single-sample clicks
    checks = check_audio(clicks, RATE)
    assert "speech" in kinds(checks) and checks.speech_share < 0.1
    assert "clipping" not in kinds(checks)


def test_clipped_speech_is_reported_and_its_warning_says_how_much():
    waveform, rate = speech()
    loud = np.clip(waveform * 4 / np.abs(waveform).max(), -1, 1)  # 12 dB into clipping
    checks = check_audio(loud, rate)
    assert kinds(checks) == {"clipping"}, checks
    assert checks.clipped_share > 0.005
    assert f"{checks.clipped_share:.1%} of the samples are clipped" in " ".join(checks.warnings)
    normalised = waveform / np.abs(waveform).max()  # peak at full scale, but nothing clipped
    assert check_audio(normalised, rate).clipped_share == 0


def test_integer_pcm_clipped_at_the_rails_is_found():
    waveform, rate = speech()
    pcm = np.clip(np.round(waveform * 3 / np.abs(waveform).max() * 32767), -32768, 32767).astype(np.int16)
    assert "clipping" in kinds(check_audio(pcm, rate))


def test_low_passed_and_upsampled_narrowband_speech_are_band_limited():
    from scipy.signal import butter, sosfilt

    waveform, rate = speech(NOISE / "C_01_NOISE_MK.wav")  # 48 kHz
    assert "bandwidth" not in kinds(check_audio(waveform, rate))
    low_passed = sosfilt(butter(12, 3400, fs=rate, output="sos"), waveform).astype(np.float32)
    checks = check_audio(low_passed, rate)
    assert kinds(checks) == {"bandwidth"}, checks
    assert 3000 < checks.bandwidth_hz <= 5000 and checks.band == "narrowband"

    wideband, rate = speech()
    upsampled = resample(resample(wideband, rate, 8000), 8000, rate)  # telephone-band speech stored at 16 kHz
    checks = check_audio(upsampled, rate)
    assert kinds(checks) == {"bandwidth"} and checks.bandwidth_hz <= 5000, checks


def test_quiet_speech_is_reported():
    waveform, rate = speech()
    checks = check_audio(waveform * 10 ** (-35 / 20), rate)  # 35 dB down: about -61 LUFS
    assert kinds(checks) == {"loudness"}, checks
    assert -65 < checks.loudness_lufs < -55
    assert "no audible signal" in " ".join(check_audio(np.zeros(RATE * 2, np.float32), RATE).warnings)


def test_columns_are_the_declared_ones():
    assert list(check_audio(*speech()).columns()) == CHECK_COLUMNS


# --- on every path: API, CLI, datasets, Ray's predictor (called directly: no Ray started) ----------------------------

@pytest.fixture(scope="module")
def scorer():
    from distill_mos.scorer import DistillMOSScorer

    return DistillMOSScorer.from_pretrained(str(ROOT), device="cpu", checks=True)


@pytest.fixture(scope="module")
def narrowband_file(tmp_path_factory):
    """Wideband speech passed through 8 kHz and stored at 16 kHz: a file whose header says wideband."""
    import soundfile as sf

    waveform, rate = speech()
    path = tmp_path_factory.mktemp("nb") / "narrowband.wav"
    sf.write(path, resample(resample(waveform, rate, 8000), 8000, rate), rate)
    return str(path)


def test_api_scores_carry_the_checks_and_files_their_warnings(scorer, narrowband_file):
    waveform, rate = speech()
    score = scorer.score_array(waveform, rate)
    assert score.checks is not None and score.checks.warnings == []
    with pytest.warns(UserWarning, match="silent"):
        assert scorer.score_array(waveform * 0, rate).checks.speech_share == 0
    good, narrow = scorer.score_files([str(DIR1 / "ref.wav"), narrowband_file])
    assert good.checks.bandwidth_hz > 7000 and good.warning is None
    assert narrow.checks.band == "narrowband" and "band-limited to" in narrow.warning
    assert narrow.mos is not None  # a warning, never a lost score


def test_checks_are_off_by_default():
    from distill_mos.scorer import DistillMOSScorer

    plain = DistillMOSScorer.from_pretrained(str(ROOT), device="cpu")
    assert next(plain.score_files([str(DIR1 / "melp.wav")])).checks is None


def test_cli_checks_columns_and_warning(tmp_path, narrowband_file, capsys):
    import csv

    from distill_mos.cli import main

    out = tmp_path / "s.csv"
    assert main([str(DIR1 / "ref.wav"), narrowband_file, "-o", str(out), "--checks"]) == 0
    assert "band-limited" in capsys.readouterr().err
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-4:] == CHECK_COLUMNS
    assert float(rows[0]["bandwidth_hz"]) > 7000 and float(rows[1]["bandwidth_hz"]) <= 5000
    assert rows[0]["warning"] == "" and "band-limited" in rows[1]["warning"]
    # a resumed run with --checks continues the columns; without it the columns differ and it refuses
    assert main([str(DIR1 / "ref.wav"), narrowband_file, str(DIR1 / "opus.wav"), "-o", str(out), "--resume",
                 "--checks", "-q"]) == 0
    assert main([str(DIR1 / "ref.wav"), str(DIR1 / "lpcnq.wav"), "-o", str(out), "--resume", "-q"]) == 2


def test_datasets_and_ray_rows_carry_the_checks(narrowband_file):
    import datasets
    import pyarrow as pa

    from distill_mos import add_mos_column
    from distill_mos.ray import DistillMOSPredictor

    files = [str(DIR1 / "ref.wav"), narrowband_file]
    dataset = datasets.Dataset.from_dict({"audio": files}).cast_column("audio", datasets.Audio())
    scored = add_mos_column(dataset, checks=True, device="cpu", model=str(ROOT))
    assert scored.features["bandwidth_hz"] == datasets.Value("float32")
    assert scored["mos_warning"][0] is None and "band-limited" in scored["mos_warning"][1]
    table = DistillMOSPredictor(model=str(ROOT), device="cpu", num_threads=1, checks=True)(pa.table({"file": files}))
    assert table.column("bandwidth_hz").to_pylist()[1] <= 5000
    assert "band-limited" in table.column("mos_warning").to_pylist()[1]
    plain = DistillMOSPredictor(model=str(ROOT), device="cpu", num_threads=1)(pa.table({"file": files}))
    assert "bandwidth_hz" not in plain.column_names
