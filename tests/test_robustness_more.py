"""
Issue 23: any duration in bounded memory, any file name, no amplified input, no injected cells; each bad case put
where users meet it (in the middle of a list or a batch), the others still scored.
"""

import csv
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import GENSPEECH, ROOT, original_file_score

from distill_mos import audio
from distill_mos.audio import load_audio, load_resampled
from distill_mos.cells import FORMULA_PREFIXES, neutralise_cell, original_path, printable_path
from distill_mos.cli import main
from distill_mos.results import Item
from feature_extraction_distillmos import StreamingResampler, resample

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
GOOD, OTHER = DIR3 / "ref.wav", DIR3 / "speex.wav"


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:  # strict UTF-8: a bad byte fails here
        return list(csv.DictReader(handle))


def speech_at(rate: int, seconds: float) -> np.ndarray:
    """`seconds` of the bundled speech (repeated as needed) at `rate`, float32."""
    speech = soundfile.read(GOOD, dtype="float32")[0]
    speech = np.tile(speech, int(np.ceil(seconds * 16000 / len(speech))))[: int(seconds * 16000)]
    return speech if rate == 16000 else resample(speech, 16000, rate)


def wav_with_header(path: Path, offset: int, fmt: str, value) -> Path:
    """The bundled speech as a WAV whose header field at `offset` is forged to `value`."""
    data = bytearray(GOOD.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


# --- 1. bounded memory: block by block, equal to all at once ----------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_blockwise_resampling_equals_resampling_at_once(rate):
    rng = np.random.default_rng(rate)
    clip = (0.1 * rng.standard_normal(rate * 3 + 17)).astype(np.float32)
    whole = resample(clip, rate, 16000)
    for block in (1000, 4099, rate):  # blocks shorter and longer than the kernel's context
        resampler = StreamingResampler(rate, 16000)
        parts = [resampler.push(clip[i : i + block]) for i in range(0, len(clip), block)] + [resampler.finish()]
        blockwise = np.concatenate(parts)
        assert blockwise.shape == whole.shape
        assert np.abs(blockwise - whole).max() < 1e-6


def test_long_audio_spills_to_disk_and_scores_as_the_original(scorer, original_model, tmp_path, monkeypatch):
    """A 48 kHz FLAC in the middle of a batch is read in small blocks into a spill file and scores as the original."""
    path = tmp_path / "long.flac"
    soundfile.write(path, speech_at(48000, 12.0), 48000, subtype="PCM_24")
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 5000)  # many blocks, context carried across each boundary
    monkeypatch.setattr(audio, "SPILL_SECONDS", 2.0)
    prepared = scorer.prepare_file(path)
    assert isinstance(prepared.waveform, np.memmap)  # spilled, not in memory
    in_memory = load_audio(path)
    assert np.abs(prepared.waveform - resample(in_memory.waveform, 48000, 16000)).max() < 1e-6
    results = list(scorer.score_files([GOOD, path, OTHER]))
    assert [r.error for r in results] == [None, None, None]
    assert results[1].duration == pytest.approx(12.0) and results[1].sampling_rate == 48000
    assert abs(results[1].mos - original_file_score(original_model, path)) <= 1e-4
    assert abs(results[1].mos - scorer.score_array(in_memory.waveform, 48000).mos) <= 1e-5


def test_undecoded_dataset_values_take_the_block_decoder(scorer, tmp_path, monkeypatch):
    """
    `{"bytes", "path"}` and `{"path"}` values (what `Audio(decode=False)`, `add_mos_column` and Ray pass on) are read
    as the encoded bytes or the file they hold: block by block into a spill file, never whole at their own rate.
    """
    from distill_mos import datasets

    path = tmp_path / "long.flac"
    soundfile.write(path, speech_at(48000, 12.0), 48000, subtype="PCM_24")
    data = path.read_bytes()
    whole = []
    monkeypatch.setattr(datasets, "decode_bytes", lambda *a, **k: whole.append(a) or pytest.fail("decoded whole"))
    monkeypatch.setattr(datasets, "load_audio", lambda *a, **k: whole.append(a) or pytest.fail("decoded whole"))
    monkeypatch.setattr(audio, "SPILL_SECONDS", 2.0)
    for value in ({"bytes": data, "path": "long.flac"}, {"bytes": None, "path": str(path)}):
        prepared = scorer.prepare_item(Item.audio(value))
        assert prepared.result.error is None and isinstance(prepared.waveform, np.memmap)  # spilled: the block decoder
        assert prepared.result.channels == 1 and prepared.result.sampling_rate == 48000
    items = [
        Item.audio({"bytes": data, "path": "long.flac"}),
        Item.audio({"bytes": b"not audio at all", "path": "bad.wav"}),  # bad, in the middle of the batch
        Item.audio({"path": str(path)}),
    ]
    results = list(scorer.score_items(items))
    assert [r.path for r in results] == ["long.flac", "bad.wav", str(path)]
    assert results[1].mos is None and results[1].error.startswith("not a readable audio file")
    (encoded,) = scorer.score_items([Item.encoded(data, "long.flac")])
    for result in (results[0], results[2]):
        assert result.error is None and result.mos == pytest.approx(encoded.mos, abs=1e-6)
        assert result.window_scores == pytest.approx(encoded.window_scores, abs=1e-6)
    assert whole == []


def test_the_length_limit_is_a_typed_refusal(scorer, tmp_path):
    """`max_seconds` refuses with an `AudioTooLongError` and a result with `too_long`, for every encoded input."""
    import subprocess

    from distill_mos.audio import AudioTooLongError

    # FLAC written to a pipe: its header states no length, so the decoder finds it too long while counting
    flac = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(GOOD), "-f", "flac", "-"],
                          capture_output=True, check=True).stdout
    nolength = tmp_path / "nolength.flac"
    nolength.write_bytes(flac)
    assert audio.probe_duration(nolength) is None
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_text("not audio")
    items = [
        Item.file(GOOD), Item.file(nolength), Item.encoded(flac, "x.flac"), Item.file(corrupt),
        Item.audio({"bytes": GOOD.read_bytes(), "path": "y.wav"}), Item.audio({"path": str(nolength)}),
        Item.array(np.zeros(16000 * 8, np.float32), 16000),  # arrays are in memory already: no limit to apply
    ]
    results = list(scorer.score_items(items, max_seconds=5))
    assert [r.too_long for r in results] == [True, True, True, False, True, True, False]
    assert {r.error for r in results if r.too_long} == {"audio is longer than 5 s, the limit here"}
    assert results[3].error.startswith("not a readable audio file") and results[6].mos is not None
    assert not any(r.too_long for r in scorer.score_items(items[:3], max_seconds=8))
    with pytest.raises(AudioTooLongError, match=f"^{nolength}: audio is longer than 5 s") as raised:
        load_audio(nolength, max_seconds=5)
    assert raised.value.max_seconds == 5 and raised.value.path == str(nolength)


def test_ffmpeg_decodes_in_blocks_exactly(tmp_path, monkeypatch):
    path = tmp_path / "speech.opus"
    soundfile.write(path, speech_at(48000, 9.0), 48000, format="OGG", subtype="OPUS")
    monkeypatch.setattr(audio, "FFMPEG_BLOCK_SECONDS", 1.5)
    blockwise = load_resampled(path)
    whole = load_audio(path)
    expected = resample(whole.waveform, whole.sampling_rate, 16000)
    assert blockwise.waveform.shape == expected.shape and blockwise.frames == whole.waveform.shape[0]
    assert np.abs(blockwise.waveform - expected).max() < 1e-6


def test_spill_file_pages_are_handed_back(tmp_path):
    """Reading every page of a spilled clip (as exact windowing does) leaves them out of the process's RSS."""
    spill = audio._SpillBuffer(1000)
    for _ in range(25):
        spill.write(np.full(1_000_000, 0.25, np.float32))  # 100 MB
    waveform = spill.array()

    def file_rss_kb() -> int:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("RssFile")).split()[1])

    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc")
    before = file_rss_kb()
    tensor = torch.from_numpy(waveform)
    total = sum(float(tensor[i : i + 122880].sum()) for i in range(0, len(waveform), 16000))
    import time

    time.sleep(0.3)
    assert total > 0
    assert file_rss_kb() - before < 50_000  # without the release thread: +100 MB


# --- 2. rates that amplify a tiny file --------------------------------------------------------------------------------


def test_rates_under_4_khz_are_refused_in_a_batch_and_in_arrays(scorer, tmp_path):
    one_hz = wav_with_header(tmp_path / "one_hz.wav", 24, "<I", 1)
    results = list(scorer.score_files([GOOD, one_hz, OTHER]))
    assert results[1].mos is None and results[1].error.startswith("a sampling rate of 1 Hz is below 4000 Hz")
    assert results[0].mos is not None and results[2].mos is not None
    clip = np.full(16000, 0.1, np.float32)
    with pytest.raises(ValueError, match="a sampling rate of 1000 Hz is below 4000 Hz"):
        scorer.score_array(clip, 1000)
    with pytest.raises(ValueError, match=f"a sampling rate of {2**64} Hz is above"):
        scorer.score_array(clip, 2**64)


def test_dataset_rows_with_no_audio_or_rate_or_a_low_rate_get_their_reasons(scorer):
    datasets = pytest.importorskip("datasets")
    from distill_mos import add_mos_column

    speech = soundfile.read(GOOD, dtype="float32")[0]
    rows = [
        {"array": speech, "sampling_rate": 16000},
        None,
        {"array": speech, "sampling_rate": None},
        {"array": speech[:800], "sampling_rate": 100},
        {"array": speech, "sampling_rate": 16000},
    ]
    scored = add_mos_column(datasets.Dataset.from_dict({"audio": rows}), scorer=scorer, batch_size=8)
    assert scored["mos_error"][1] == "the row has no audio (its audio value is None)"
    assert scored["mos_error"][2].startswith("the audio value has an 'array' but no 'sampling_rate'")
    assert scored["mos_error"][3].startswith("a sampling rate of 100 Hz is below 4000 Hz")
    assert scored["mos"][0] is not None and scored["mos"][4] == pytest.approx(scored["mos"][0], abs=1e-5)


# --- 3, 4, 6. names, unreadable inputs, injected cells: in one command line ------------------------------------------


def test_odd_names_and_unreachable_inputs_get_rows_and_cells_are_neutralised(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    undecodable = os.fsdecode(b"\xff\xfe speech.wav")  # not UTF-8: Python holds it with surrogates
    Path(undecodable).write_bytes(GOOD.read_bytes())
    formula = "=cmd|' -C calc'!A0.wav"
    Path(formula).write_bytes(OTHER.read_bytes())
    (tmp_path / "empty").mkdir()
    (tmp_path / "folder.wav").mkdir()
    locked = tmp_path / "locked"
    (locked / "sub").mkdir(parents=True)
    (locked / "sub" / "inside.wav").write_bytes(GOOD.read_bytes())
    long_file = tmp_path / "long.wav"
    soundfile.write(long_file, speech_at(16000, 12.0), 16000)
    if os.geteuid() == 0:  # root ignores permissions: refuse as the kernel would, at the one call that meets it
        real_stat = os.stat

        def stat(path, *args, **kwargs):
            if str(locked) + os.sep in os.path.abspath(os.fsdecode(path)):
                raise PermissionError(13, "Permission denied", str(path))
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", stat)
    else:
        locked.chmod(0o600)  # readable but not searchable
    try:
        inputs = [str(GOOD), undecodable, "empty", "folder.wav", str(locked / "sub" / "inside.wav"), formula, str(long_file)]
        code = main([*inputs, "-o", "out.csv", "--safe-csv", "--max-duration", "10", "--no-progress"])
    finally:
        locked.chmod(0o755)
    rows = rows_of(tmp_path / "out.csv")
    assert code == 1
    assert [r["file"] for r in rows] == [
        str(GOOD), "\\xff\\xfe speech.wav", "empty", "folder.wav", str(locked / "sub" / "inside.wav"),
        "'" + formula, str(long_file),
    ]
    assert original_path(rows[1]["file"]) == undecodable  # lossless
    assert rows[1]["mos"] and not rows[1]["error"]  # scored
    assert rows[2]["error"].startswith("folder holds no audio files") and rows[3]["error"].startswith("folder holds")
    assert rows[4]["error"].startswith("permission denied")
    assert rows[5]["mos"] and not rows[5]["error"]
    assert rows[6]["error"] == "audio is longer than 10 s, the limit here" and not rows[6]["mos"]
    assert rows[0]["mos"]
    err = capsys.readouterr().err
    assert "error: empty: folder holds no audio files" in err


def test_undecodable_names_in_jsonl_and_the_api(scorer, tmp_path, pipe):
    name = tmp_path / os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes
    name.write_bytes(GOOD.read_bytes())
    out = tmp_path / "out.jsonl"
    assert main([str(GOOD), str(name), str(OTHER), "-o", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_bytes().decode("utf-8").splitlines()]
    assert rows[1]["file"] == printable_path(name) == str(tmp_path) + "/caf\\xe9.wav"
    assert rows[1]["mos"] == pytest.approx(rows[0]["mos"], abs=1e-5)  # the same audio as GOOD
    [result] = scorer.score_files([name])
    assert result.error is None and result.mos == pytest.approx(rows[0]["mos"], abs=1e-5)
    assert pipe(str(name))["mos"] == pytest.approx(rows[0]["mos"], abs=1e-5)
    from distill_mos.datasets import example_waveform

    waveform, rate = example_waveform({"path": str(name), "bytes": None})
    assert rate == 16000 and len(waveform) == soundfile.info(GOOD).frames


@pytest.mark.parametrize("prefix", FORMULA_PREFIXES)
def test_cells_a_spreadsheet_would_run_are_quoted(prefix):
    assert neutralise_cell(prefix + "SUM(A1)") == "'" + prefix + "SUM(A1)"
    assert neutralise_cell("speech.wav") == "speech.wav" and neutralise_cell(3.5) == 3.5


# --- 5. resume after a cut inside a quoted field -----------------------------------------------------------------------


def test_resume_after_a_cut_inside_a_quoted_name(tmp_path):
    first, newline_name, last = tmp_path / "a.wav", tmp_path / "b\nc.wav", tmp_path / "d.wav"
    for path in (first, newline_name, last):
        path.write_bytes(GOOD.read_bytes())
    out = tmp_path / "out.csv"
    header = "file,mos,duration_s,sampling_rate,channels,error,warning\r\n"
    kept = f"{first},3.25,7.8,16000,1,,\r\n"  # a made-up score: kept as it is, so not rescored
    cut = f'"{tmp_path}/b\n'  # killed inside the quoted name, right after its newline
    (tmp_path / "out.csv.partial").write_text(header + kept + cut, newline="")
    assert main([str(first), str(newline_name), str(last), "-o", str(out), "--resume", "--no-progress"]) == 0
    rows = rows_of(out)
    assert [r["file"] for r in rows] == [str(first), str(newline_name), str(last)]
    assert rows[0]["mos"] == "3.25" and rows[1]["mos"] and rows[2]["mos"]


# --- 7. weak spots ----------------------------------------------------------------------------------------------------


def test_damaged_headers_are_said_in_words_and_odd_ones_warned(scorer, tmp_path):
    no_rate = wav_with_header(tmp_path / "no_rate.wav", 24, "<I", 0)  # libsndfile: "SF_INFO struct incomplete"
    float16 = wav_with_header(tmp_path / "float16.wav", 20, "<H", 3)  # libsndfile: "Unspecified internal error"
    seven_bit = wav_with_header(tmp_path / "seven_bit.wav", 34, "<H", 7)  # read as unsigned 8-bit
    constant = tmp_path / "constant.wav"
    soundfile.write(constant, np.full(32000, np.finfo(np.float32).max, np.float32), 16000, subtype="FLOAT")
    quiet_and_short = tmp_path / "quiet_and_short.wav"
    soundfile.write(quiet_and_short, np.zeros(8000, np.float32), 16000)
    results = list(scorer.score_files([GOOD, no_rate, float16, seven_bit, constant, quiet_and_short, OTHER]))
    for damaged in results[1:3]:
        assert damaged.error.startswith("not a readable audio file (the WAV header is damaged: it declares format tag")
        assert "SF_INFO" not in damaged.error and "internal error" not in damaged.error
    assert results[3].mos is not None and "7 bits per sample" in results[3].warning
    assert results[4].mos is not None and results[4].warning.startswith("audio is constant (every sample is 3.4e+38)")
    assert ".;" not in results[5].warning
    assert results[5].warning.startswith("audio is silent") and "; audio is very short (0.50 s)" in results[5].warning
    assert results[0].mos is not None and results[6].mos is not None


def test_short_and_constant_arrays_warn_and_an_integral_float_rate_is_accepted(scorer):
    speech = soundfile.read(GOOD, dtype="float32")[0]
    with pytest.warns(UserWarning, match=r"the clip is very short \(0\.50 s\)"):
        scorer.score_array(speech[:8000], 16000)
    with pytest.warns(UserWarning, match=r"the clip is constant \(every sample is 3\.4e\+38\)"):
        scorer.score_array(np.full(32000, np.finfo(np.float32).max, np.float32), 16000)
    assert scorer.score_array(speech, 16000.0).mos == pytest.approx(scorer.score_array(speech, 16000).mos, abs=1e-6)
    with pytest.raises(ValueError, match="whole number"):
        scorer.score_array(speech, 16000.5)


@pytest.fixture(scope="module")
def pipe():
    from transformers import pipeline

    return pipeline("speech-quality-assessment", model=str(ROOT), trust_remote_code=True)


def test_pipeline_keeps_a_lists_results_and_names_the_bad_file(pipe, tmp_path):
    nan_file = tmp_path / "nan.wav"
    clip = soundfile.read(GOOD, dtype="float32")[0]
    clip[100:103] = np.nan
    soundfile.write(nan_file, clip, 16000, subtype="FLOAT")
    silent = {"array": np.zeros(16000, np.float32), "sampling_rate": 16000}
    outputs = pipe([str(GOOD), str(nan_file), silent, str(OTHER)], batch_size=2)
    assert outputs[1]["mos"] is None and outputs[1]["error"].startswith(f"{nan_file}: audio contains 3 NaN")
    assert outputs[2]["warning"].startswith("the clip is silent")
    alone = [pipe(str(GOOD))["mos"], pipe(str(OTHER))["mos"]]
    assert [outputs[0]["mos"], outputs[3]["mos"]] == pytest.approx(alone, abs=1e-5)
    assert outputs[0]["error"] is None and outputs[0]["warning"] is None
    with pytest.raises(ValueError, match=f"{nan_file}: audio contains 3 NaN"):
        pipe(str(nan_file))  # one input: raised, naming the file
