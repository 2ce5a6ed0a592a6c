"""
The Space (space/app.py), issue 11 points 1-3 and the precision setting: the per-window plot (points, ticks on long
clips), one bad or unusual file in "Several files" (webm, mp4, text) keeps its own row, named API outputs, no empty
CSV box, DISTILL_MOS_DTYPE.
"""

import re

import numpy as np
import pytest
import soundfile
import torch

from conftest import GENSPEECH
from test_space_api import client, served  # noqa: F401 - the app on 127.0.0.1 and its gradio_client, shared fixtures
from test_space_app import load_space_app

app = load_space_app()
# the Space's modules (space/*.py), importable once app.py has put space/ on sys.path
import formatting  # noqa: E402
import page  # noqa: E402
import plots  # noqa: E402
import scoring  # noqa: E402
import settings  # noqa: E402
from handlers import Handlers  # noqa: E402
CLIPS = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall"
LONG_CLIP = CLIPS / "dir3" / "opus.wav"  # 7.8 s: two windows
POINT = re.compile(r'<circle class="mos-point" data-series="([^"]*)" cx="([\d.]+)" cy="([\d.]+)"')
X_TICK = re.compile(r'<g class="x-tick">.*?<text x="([\d.]+)"[^>]*>([^<]+)</text></g>')


def handlers(scorer, **limits):
    return Handlers(scoring.SpaceScorer(scorer, settings.Limits(**limits), scoring.load_examples()))


def test_plot_draws_the_window_scores_of_this_result(scorer, tmp_path):
    """The one-clip plot is built from the response itself: its points are this clip's windows (centre, MOS)."""
    clip = tmp_path / "twelve.wav"  # 12 s: 6 windows whose centres span 4.3 s (a 7.8 s clip gets no plot)
    speech = np.concatenate([soundfile.read(CLIPS / "dir3" / f"{n}.wav", dtype="float32")[0] for n in ("opus", "melp")])
    soundfile.write(clip, speech[: 12 * 16000], 16000)
    (expected,) = scorer.score_files([clip])
    _, plot, details = handlers(scorer).score_one(str(clip))
    assert plot.visible is True
    points = POINT.findall(plot.value)
    assert len(points) == len(expected.window_scores) == 6
    ticks = [(float(x), float(label)) for x, label in X_TICK.findall(plot.value)]
    (x0, t0), (x1, t1) = ticks[0], ticks[-1]
    top, bottom = plots.PLOT_MARGIN["top"], plots.PLOT_HEIGHT - plots.PLOT_MARGIN["bottom"]
    for (series, cx, cy), start, score in zip(points, expected.window_start_times, expected.window_scores):
        assert series == clip.name
        assert t0 + (float(cx) - x0) * (t1 - t0) / (x1 - x0) == pytest.approx(start + 7.68 / 2, abs=0.01)
        assert 5 - 4 * (float(cy) - top) / (bottom - top) == pytest.approx(score, abs=1e-3)


@pytest.mark.parametrize("duration", [7.8, 25.0, 61.0, 600.0, 3600.0])
def test_time_axis_ticks_do_not_crowd_on_long_clips(duration):
    starts = np.linspace(0, duration - 7.68, 40)
    svg = plots.window_plot_svg([plots.Series("clip.wav", list(starts + 3.84), [3.0] * len(starts))], duration)
    ticks = [(float(x), float(label)) for x, label in X_TICK.findall(svg)]
    assert 3 <= len(ticks) <= plots.PLOT_MAX_TICKS + 1
    values = [t for _, t in ticks]
    assert values[0] == 0 and values[-1] <= duration and duration - values[-1] < values[1] - values[0]
    # labels at least 50 drawing units apart (a label is at most 4 digits at font-size 12: about 30 units)
    assert min(b - a for (a, _), (b, _) in zip(ticks, ticks[1:])) >= 50
    step = values[1] - values[0]
    assert step / 10 ** np.floor(np.log10(step)) in (1, 2, 5)  # 1, 2, 5 x 10^k seconds


def test_plot_is_hidden_when_there_is_nothing_to_plot(scorer, tmp_path):
    one_window = CLIPS / "dir1" / "lpcnu.wav"
    assert handlers(scorer).score_one(str(one_window))[1].visible is False
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(16000 * 9, dtype=np.float32), 16000)
    assert handlers(scorer).score_one(str(silent))[1].visible is False


@pytest.fixture(scope="module")
def unusual_files(tmp_path_factory):
    """The same speech as webm (Opus) and mp4 (AAC), made with torchcodec's FFmpeg encoder, and a text file."""
    from torchcodec.encoders import AudioEncoder

    folder = tmp_path_factory.mktemp("formats")
    speech, rate = soundfile.read(LONG_CLIP, dtype="float32")
    files = {}
    for suffix in ("webm", "mp4"):
        files[suffix] = folder / f"speech.{suffix}"
        AudioEncoder(torch.from_numpy(speech)[None], sample_rate=rate).to_file(str(files[suffix]))
    files["txt"] = folder / "notes.txt"
    files["txt"].write_text("not audio\n")
    return files


def test_several_files_give_every_file_its_own_row(scorer, client, unusual_files):  # noqa: F811
    """Issue 11.2: a .webm or .mp4 in the list refused the whole request ("Invalid file type")."""
    from gradio_client import handle_file

    paths = [unusual_files["webm"], LONG_CLIP, unusual_files["mp4"], unusual_files["txt"]]
    expected = list(scorer.score_files(paths))
    assert [r.ok for r in expected] == [True, True, True, False]
    status, table, csv_file = client.predict([handle_file(str(p)) for p in paths], api_name="/score_many")
    assert status.startswith("Scored 3 of 4 file(s).")
    rows = table["data"]
    assert [row[0] for row in rows] == ["speech.webm", "opus.wav", "speech.mp4", "notes.txt"]
    for row, result in zip(rows[:3], expected[:3]):
        assert row[1] == round(result.mos, 2) and row[4] == ""
    assert rows[3][1] is None and rows[3][4].startswith("Not a readable audio file")
    assert csv_file["orig_name"] == "distill-mos-scores.csv"


def test_api_outputs_and_inputs_are_named(client):  # noqa: F811
    """Issue 11.3: view_api() showed value_17 / value_21."""
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/predict", "/score_many", "/compare"} <= set(api)
    names = {
        endpoint: ([p["parameter_name"] for p in api[endpoint]["parameters"]], [r["label"] for r in api[endpoint]["returns"]])
        for endpoint in ("/predict", "/score_many", "/compare")
    }
    assert names == {
        "/predict": (["audio"], ["result"]),
        "/score_many": (["paths"], ["status", "scores", "Download CSV"]),
        "/compare": (["clip_a", "clip_b"], ["comparison"]),
    }


def test_csv_box_appears_only_with_a_csv(scorer):
    """Issue 11.3: an empty "Download CSV" box took space before there was a CSV."""
    demo = page.build_demo(scorer, settings.Limits(), examples=[])
    (csv_box,) = [c for c in demo.config["components"] if c["props"].get("elem_id") == "batch-csv"]
    assert csv_box["props"]["visible"] is False
    (score_all,) = [d for d in demo.config["dependencies"] if d["api_name"] == "score_many"]
    (then,) = [d for d in demo.config["dependencies"] if d["trigger_after"] == score_all["id"]]
    assert then["inputs"] == then["outputs"] == [csv_box["id"]]  # shows the box once score_many wrote a CSV
    _, _, csv_path = handlers(scorer).score_many([str(LONG_CLIP)])
    assert Handlers.show_csv(csv_path).visible is True
    assert Handlers.show_csv(handlers(scorer).score_many([])[2]).visible is False


@pytest.mark.parametrize("value", ["float32", "bfloat16", "float16", "auto", "BFloat16 "])
def test_dtype_setting_is_passed_to_the_library(monkeypatch, value):
    monkeypatch.setenv("DISTILL_MOS_DTYPE", value)
    assert settings.scorer_kwargs()["dtype"] == value.strip().lower()


def test_dtype_setting_default_and_bad_value(monkeypatch):
    monkeypatch.delenv("DISTILL_MOS_DTYPE", raising=False)
    assert "dtype" not in settings.scorer_kwargs()  # the library's default, float32
    monkeypatch.setenv("DISTILL_MOS_DTYPE", "int8")
    with pytest.raises(ValueError, match="DISTILL_MOS_DTYPE must be one of float32, bfloat16, float16, auto"):
        settings.scorer_kwargs()


def test_warnings_use_the_command_line_tools_wording(scorer, tmp_path):
    """Issue 11.8 (shared wording): the Space shows the library's warning sentences, as the CLI writes them."""
    from distill_mos.audio import short_clip_warning

    short = tmp_path / "short.wav"
    soundfile.write(short, 0.1 * np.sin(np.arange(4000) / 5).astype(np.float32), 16000)  # 0.25 s
    truncated = tmp_path / "truncated.wav"  # header says 7.8 s, the file holds 500 samples
    speech, _ = soundfile.read(LONG_CLIP, dtype="int16")
    soundfile.write(truncated, speech, 16000, subtype="PCM_16")
    truncated.write_bytes(truncated.read_bytes()[: 44 + 1000])
    for path in (short, truncated):
        (expected,) = scorer.score_files([path])
        assert expected.ok and expected.warning, path.name
        markdown, _, details = handlers(scorer).score_one(str(path))
        assert f"⚠️ {formatting.sentence(expected.warning)}" in markdown
        assert details["warning"] == expected.warning
        _, table, csv_path = handlers(scorer).score_many([str(path)])
        assert table["error"][0] == f"Warning: {formatting.sentence(expected.warning)}"
    assert expected.warning != short_clip_warning(500 / 16000)  # the truncated file says so, not only "short"
    (short_result,) = scorer.score_files([short])
    assert short_result.warning == short_clip_warning(0.25)


def test_dtype_setting_reaches_the_model(monkeypatch):
    """Issue 12.1: DISTILL_MOS_DTYPE=bfloat16 loads the Space's model in bfloat16; unset, it stays float32."""
    from conftest import ROOT

    monkeypatch.setenv("DISTILL_MOS_SPACE_MODEL", str(ROOT))
    monkeypatch.setenv("DISTILL_MOS_DEVICE", "cpu")
    monkeypatch.setenv("DISTILL_MOS_DTYPE", "bfloat16")
    assert settings.load_scorer().model.dtype == torch.bfloat16
    monkeypatch.delenv("DISTILL_MOS_DTYPE")
    assert settings.load_scorer().model.dtype == torch.float32


def test_a_flac_without_length_in_its_header_is_scored_not_refused_as_too_long(scorer, tmp_path):
    """Issue 11.8: libsndfile reports 2**63 - 1 frames for a FLAC written to a pipe ("5.8e14 s"); the Space's duration
    limit must treat that as unknown and measure the decoded audio, as the command line tool does."""
    import subprocess

    flac = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(LONG_CLIP), "-f", "flac", "-"],
                          capture_output=True, check=True).stdout
    path = tmp_path / "nolength.flac"
    path.write_bytes(flac)
    assert scoring.probe_duration(path) is None
    details = handlers(scorer, max_seconds=60).score_one(str(path))[2]
    (expected,) = scorer.score_files([LONG_CLIP])
    assert details["mos"] == pytest.approx(round(expected.mos, 2), abs=0.0051)
    # a real over-long file is still refused before decoding
    markdown = handlers(scorer, max_seconds=1).score_one(str(LONG_CLIP))[0]
    assert "Audio is too long (7.8 s); this Space scores clips up to 1 s." in markdown


def test_the_duration_limit_holds_while_decoding_audio_whose_header_gives_no_length(scorer, tmp_path):
    """A few KB of FLAC without a length in its header can hold hours of silence: the Space's limit must stop the
    decoder before the samples are in memory, not after (here 600 s of 8 kHz silence in ~115 KB, limit 60 s)."""
    import subprocess

    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(8000 * 600, dtype=np.int16), 8000, subtype="PCM_16")
    flac = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(silence), "-f", "flac", "-"],
                          capture_output=True, check=True).stdout
    path = tmp_path / "hours.flac"
    path.write_bytes(flac)
    assert scoring.probe_duration(path) is None and len(flac) < 200_000  # ~115 KB for 10 minutes
    (result,) = scoring.SpaceScorer(scorer, settings.Limits(max_seconds=60), []).score_paths([str(path)])
    assert result.too_long  # typed: the Space words the refusal from this field, not from the library's text
    assert result.mos is None and result.error == (
        "audio is too long (over 60 s); this Space scores clips up to 60 s. Cut it, or use the distill-mos command "
        "line tool, which has no limit"
    )
    # FFmpeg's path (webm/ogg/mp3 often state no duration either) stops at the limit too
    from distill_mos.audio import AudioFileError, load_audio

    ogg = tmp_path / "long.ogg"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(silence), "-c:a", "libopus", str(ogg)], check=True)
    with pytest.raises(AudioFileError, match="audio is longer than 60 s, the limit here"):
        load_audio(ogg.with_suffix(".ogg"), max_seconds=60)
    assert load_audio(path, max_seconds=700).duration == pytest.approx(600)


# --- issue 17 §4: Space polish ---------------------------------------------------------------------------------------

LEGEND = re.compile(r'<g class="legend"><line x1="([\d.]+)"[^>]*y1="([\d.]+)"[^>]*/><text x="([\d.]+)"[^>]*>([^<]*)<')


def test_compare_legend_of_long_file_names_does_not_overlap():
    names = ["A: " + "enhanced_take_" * 4 + "a.wav", "B: " + "WWWWWWWWWW_" * 8 + "b.wav"]  # 60 and 91 characters
    series = [plots.Series(name, [4.0, 12.0], [3.0, 3.5]) for name in names]
    svg = plots.window_plot_svg(series, 16.0)
    entries = LEGEND.findall(svg)
    assert len(entries) == 2
    rows = [float(y) for _, y, _, _ in entries]
    assert rows[1] - rows[0] >= 14  # one row each (12 px text), never side by side
    for _, _, x, text in entries:  # each label fits the plot's width at 8 px per character (wide letters)
        assert float(x) + 8 * len(text) <= plots.PLOT_WIDTH
    assert entries[0][3] == names[0]  # a name that fits is shown whole; a longer one is shortened, with a tooltip
    assert entries[1][3].endswith("…") and f"<title>{names[1]}</title>" in svg
    # the plot area starts below the legend
    top_gridline = min(float(y) for y in re.findall(r'<g class="y-tick"><line [^>]*y1="([\d.]+)"', svg))
    assert top_gridline > max(rows) + 6


def test_difference_has_the_headline_minus_sign(scorer):
    before, after = CLIPS / "dir3" / "speex.wav", CLIPS / "dir3" / "opus.wav"
    markdown, _, result = handlers(scorer).compare(str(after), str(before))  # B is worse: a negative difference
    assert result["difference"] < 0
    assert f"### B − A: −{abs(result['difference']):.2f} MOS (A is rated better)" in markdown
    assert "-" not in markdown.splitlines()[0]  # U+2212 throughout the headline, not a hyphen-minus


def test_example_condition_is_not_wrapped_in_nested_parentheses(scorer):
    (example,) = [e for e in scoring.load_examples() if e.condition == "LPCNet (quantized)"]
    markdown, _, _ = handlers(scorer).score_one(str(example.path))
    assert "((" not in markdown and "))" not in markdown
    assert f"GenSpeech clip, condition LPCNet (quantized): **{example.human_mos:.2f}**" in markdown
