"""The Space's Python functions (space/app.py) on good, bad, silent, too long and too large input; its limits."""

import csv
import filecmp
import importlib.util
import re
import sys

import gradio as gr
import numpy as np
import pytest
import soundfile

from conftest import GENSPEECH, ROOT

CLIPS = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall"
LONG_CLIP = CLIPS / "dir3" / "opus.wav"  # 7.8 s: two windows
ONE_WINDOW_CLIP = CLIPS / "dir1" / "lpcnu.wav"  # 7.0 s: one window


def load_space_app():
    """space/app.py as a module (it is a script folder, not a package)."""
    name = "distill_mos_space_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "space" / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


app = load_space_app()
# the Space's modules (space/*.py), importable once app.py has put space/ on sys.path
import formatting  # noqa: E402
import page  # noqa: E402
import scoring  # noqa: E402
import settings  # noqa: E402
from handlers import Handlers  # noqa: E402


def library_score(scorer, path):
    (result,) = scorer.score_files([path])
    assert result.error is None
    return result


def handlers(scorer, **limits):
    return Handlers(scoring.SpaceScorer(scorer, settings.Limits(**limits), scoring.load_examples()))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    corrupt = folder / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    silent = folder / "silent.wav"
    soundfile.write(silent, np.zeros(32000, dtype=np.float32), 16000)
    short = folder / "short.wav"
    soundfile.write(short, 0.1 * np.sin(np.arange(4000) / 5).astype(np.float32), 16000)
    return {"corrupt": corrupt, "empty": empty, "silent": silent, "short": short}


@pytest.fixture(scope="module")
def speech_16s(tmp_path_factory):
    """16 s of GenSpeech speech (three clips end to end, cut): 10 windows whose centres span 8.3 s."""
    path = tmp_path_factory.mktemp("long") / "speech16.wav"
    speech = np.concatenate([soundfile.read(CLIPS / "dir3" / f"{name}.wav", dtype="float32")[0] for name in ("opus", "melp", "speex")])
    soundfile.write(path, speech[: 16 * 16000], 16000)
    return path


def test_one_clip_shows_the_library_score_label_plot_and_what_was_read(scorer, speech_16s):
    expected = library_score(scorer, speech_16s)
    markdown, plot, details = handlers(scorer).score_one(str(speech_16s))
    assert f"Predicted MOS {expected.mos:.2f} / 5 — {formatting.acr_label(expected.mos)}" in markdown
    assert "16.00 s" in markdown and "16000 Hz" in markdown and "1 channel (mono)" in markdown
    assert details["mos"] == pytest.approx(expected.mos, abs=1e-4)
    assert details["window_scores"] == pytest.approx(expected.window_scores, abs=1e-4)
    # windows spread over the clip: the plot is shown, one point per window, scores as the library's
    assert len(expected.window_scores) == 10
    assert plot.visible is True
    # the SVG's points, read back from their tooltips: "<name>: <centre> s, MOS <score>", two decimals
    points = re.findall(r"<title>speech16\.wav: ([\d.]+) s, MOS ([\d.]+)</title>", plot.value)
    assert [float(m) for _, m in points] == pytest.approx(expected.window_scores, abs=0.0051)
    assert [float(t) for t, _ in points] == pytest.approx([s + 7.68 / 2 for s in expected.window_start_times], abs=0.0051)


def test_two_windows_close_together_get_no_plot(scorer):
    """Issue 17 §4: a 7.8 s clip has two windows 0.12 s apart; a plot of them says nothing, the MOS says it all."""
    expected = library_score(scorer, LONG_CLIP)
    assert len(expected.window_scores) == 2
    markdown, plot, details = handlers(scorer).score_one(str(LONG_CLIP))
    assert "7.80 s" in markdown and "2 windows of 7.68 s" in markdown
    assert plot.visible is False and details["window_scores"] == pytest.approx(expected.window_scores, abs=1e-4)


def test_one_window_clip_has_no_plot(scorer):
    expected = library_score(scorer, ONE_WINDOW_CLIP)
    assert len(expected.window_scores) == 1
    markdown, plot, details = handlers(scorer).score_one(str(ONE_WINDOW_CLIP))
    assert f"{expected.mos:.2f}" in markdown
    assert plot.visible is False


def test_examples_show_their_human_mos(scorer):
    examples = scoring.load_examples()
    assert len(examples) == 5  # space/README.md: "five GenSpeech clips"
    assert "five GenSpeech clips" in (ROOT / "space" / "README.md").read_text()
    with open(GENSPEECH / "labels.csv") as handle:
        human = {
            f"genspeech_{r['speaker_group']}_{r['item']}_{r['condition']}.wav": float(r["mos"])
            for r in csv.DictReader(handle) if r["mos"]
        }
    for example in examples:  # bundled clips are the test data's, byte for byte, with the same labels
        assert example.human_mos == pytest.approx(human[example.path.name])
        group, item, condition = example.path.stem.split("_")[1:]
        assert filecmp.cmp(example.path, CLIPS / item / f"{condition}.wav", shallow=False)
    example = examples[0]
    markdown, _, details = handlers(scorer).score_one(str(example.path))
    assert f"**{example.human_mos:.2f}**" in markdown
    assert details["human_mos"] == pytest.approx(example.human_mos, abs=1e-4)
    # a file that is not an example gets no human MOS
    markdown, _, details = handlers(scorer).score_one(str(CLIPS / "dir1" / "ref.wav"))
    assert "Human listening-test" not in markdown and "human_mos" not in details


def test_48k_audio_is_resampled_and_says_so(scorer):
    path = sorted((ROOT / "tests" / "data" / "tcdvoip" / "audio").rglob("*.wav"))[0]
    expected = library_score(scorer, path)
    markdown, _, details = handlers(scorer).score_one(str(path))
    assert f"{expected.mos:.2f}" in markdown
    assert f"{expected.sampling_rate} Hz" in markdown and "resampled to 16 kHz" in markdown
    assert details["sampling_rate"] == expected.sampling_rate != 16000


@pytest.mark.parametrize(
    "name, message",
    [("corrupt", "Not a readable audio file"), ("empty", "File is empty (0 bytes)"), ("missing", "No such file")],
)
def test_unscorable_files_give_a_readable_message(scorer, bad_files, tmp_path, name, message):
    path = bad_files.get(name, tmp_path / "missing.wav")
    markdown, plot, details = handlers(scorer).score_one(str(path))
    assert markdown.startswith("### ⚠️ Could not score this file")
    assert message in markdown
    assert "Traceback" not in markdown and "Predicted MOS" not in markdown
    assert str(path.parent) not in markdown  # the server's temporary folder is not shown
    assert details["mos"] is None and details["error"]
    assert plot.visible is False
    with pytest.raises(gr.Error, match=re.escape(message)):
        handlers(scorer).score_api(str(path))


def test_silent_file_warns_and_shows_no_rating(scorer, bad_files):
    [library] = scorer.score_files([bad_files["silent"]])
    markdown, plot, details = handlers(scorer).score_one(str(bad_files["silent"]))
    assert "No meaningful score: the audio is silent" in markdown
    assert "Predicted MOS" not in markdown
    assert plot.visible is False
    # machine-readable answers keep the model's number, flagged, as the library and the CLI do
    assert details["warning"] and "silent" in details["warning"]
    assert details["quality"] is None and details["mos"] == pytest.approx(library.mos, abs=1e-4)
    assert handlers(scorer).score_api(str(bad_files["silent"]))["warning"] == details["warning"]


def test_very_short_file_is_scored_with_a_warning(scorer, bad_files):
    expected = library_score(scorer, bad_files["short"])
    markdown, _, details = handlers(scorer).score_one(str(bad_files["short"]))
    assert f"Predicted MOS {expected.mos:.2f} / 5" in markdown and "very short" in markdown
    assert details["mos"] == pytest.approx(expected.mos, abs=1e-4)


def test_too_long_audio_is_refused_before_decoding(scorer, monkeypatch):
    h = handlers(scorer, max_seconds=5)
    monkeypatch.setattr("distill_mos.scorer.load_audio", lambda *a, **k: pytest.fail("decoded a refused file"))
    markdown, _, details = h.score_one(str(LONG_CLIP))
    assert "Audio is too long (7.8 s); this Space scores clips up to 5 s" in markdown
    assert details["mos"] is None


def test_too_long_audio_is_refused_after_decoding_when_the_header_does_not_say(scorer, monkeypatch):
    monkeypatch.setattr(scoring, "probe_duration", lambda path: None)
    markdown, _, _ = handlers(scorer, max_seconds=5).score_one(str(LONG_CLIP))
    # the decoder stops at the limit (it never holds more than the limit in memory), in the Space's words
    assert "Audio is too long (over 5 s); this Space scores clips up to 5 s. Cut it, or use the distill-mos" in markdown
    assert "Predicted MOS" in handlers(scorer, max_seconds=8).score_one(str(LONG_CLIP))[0]


def test_too_large_file_is_refused(scorer):
    markdown, _, details = handlers(scorer, max_upload_mb=0.1).score_one(str(LONG_CLIP))
    assert "File is too large (0.2 MB); this Space accepts files up to 0.1 MB" in markdown
    assert details["mos"] is None


def test_no_input_asks_for_one(scorer):
    markdown, plot, details = handlers(scorer).score_one(None)
    assert "Upload a file or record" in markdown and details is None
    status, table, csv_path = handlers(scorer).score_many([])
    assert "Upload one or more" in status and csv_path is None and table.empty
    with pytest.raises(gr.Error):
        handlers(scorer).score_api(None)


def test_several_files_table_and_csv(scorer, bad_files):
    paths = [str(LONG_CLIP), str(bad_files["corrupt"]), str(ONE_WINDOW_CLIP), str(bad_files["silent"])]
    expected = list(scorer.score_files(paths))
    status, table, csv_path = handlers(scorer).score_many(paths)
    assert status == "Scored 3 of 4 file(s). 1 could not be scored: see the error column."
    assert list(table.columns) == formatting.TABLE_COLUMNS
    assert list(table["file"]) == ["opus.wav", "corrupt.wav", "lpcnu.wav", "silent.wav"]
    assert table["MOS"][0] == round(expected[0].mos, 2) and table["MOS"][2] == round(expected[2].mos, 2)
    assert table["duration (s)"][0] == 7.8
    assert table["error"][1].startswith("Not a readable audio file")  # as the One clip tab words it and np.isnan(table["MOS"][1])
    assert np.isnan(table["MOS"][3]) and "silent" in table["error"][3]
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == list(table["file"])
    for row, result in zip(rows, expected):
        if result.error:
            assert row["mos"] == "" and row["error"]
        else:
            assert float(row["mos"]) == pytest.approx(result.mos, abs=1e-5)
            assert float(row["duration_s"]) == pytest.approx(result.duration)
    assert rows[3]["warning"] and rows[3]["quality"] == ""


def test_more_files_than_allowed_are_skipped_with_a_reason(scorer):
    paths = [str(ONE_WINDOW_CLIP)] * 3
    status, table, _ = handlers(scorer, max_files=2).score_many(paths)
    assert table["MOS"].notna().tolist() == [True, True, False]
    assert table["error"][2] == "Skipped: this Space scores up to 2 files per request."
    assert status.startswith("Scored 2 of 3")


def test_scoring_failure_is_reported_and_the_next_request_works(scorer, monkeypatch):
    h = handlers(scorer)
    monkeypatch.setattr(h.space.scorer, "score_prepared", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    markdown, _, _ = h.score_one(str(ONE_WINDOW_CLIP))
    assert "Scoring failed (RuntimeError)" in markdown and "boom" not in markdown
    monkeypatch.undo()
    assert "Predicted MOS" in h.score_one(str(ONE_WINDOW_CLIP))[0]


@pytest.mark.parametrize(
    "mos, label",
    [(0.7, "bad"), (1.49, "bad"), (1.5, "poor"), (2.49, "poor"), (2.5, "fair"), (3.5, "good"), (4.49, "good"),
     (4.5, "excellent"), (5.3, "excellent")],
)
def test_acr_label(mos, label):
    assert formatting.acr_label(mos) == label


def test_limits_from_env(monkeypatch):
    assert settings.Limits.from_env() == settings.Limits()
    monkeypatch.setenv("DISTILL_MOS_MAX_SECONDS", "30")
    monkeypatch.setenv("DISTILL_MOS_MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("DISTILL_MOS_MAX_FILES", "3")
    monkeypatch.setenv("DISTILL_MOS_CONCURRENCY", "1")
    monkeypatch.setenv("DISTILL_MOS_QUEUE_SIZE", "4")
    limits = settings.Limits.from_env()
    assert limits == settings.Limits(max_seconds=30, max_upload_mb=5, max_files=3, concurrency=1, queue_size=4)
    assert limits.max_upload_bytes == 5_000_000
    assert "up to 30 s of audio and 5 MB per file, 3 files per request" in limits.describe()
    monkeypatch.setenv("DISTILL_MOS_MAX_FILES", "many")
    with pytest.raises(ValueError, match="DISTILL_MOS_MAX_FILES must be a number"):
        settings.Limits.from_env()
    monkeypatch.setenv("DISTILL_MOS_MAX_FILES", "0")
    with pytest.raises(ValueError, match="must be more than 0"):
        settings.Limits.from_env()


def test_demo_has_bounded_queue_api_and_safe_launch_settings(scorer, monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    limits = settings.Limits(max_upload_mb=7, concurrency=3, queue_size=5)
    demo = page.build_demo(scorer, limits)
    assert demo._queue.max_size == 5
    assert demo._queue.default_concurrency_limit == 3
    api_names = {fn.api_name for fn in demo.fns.values()}
    assert {"predict", "score_many"} <= api_names
    kwargs = page.launch_kwargs(limits)
    assert kwargs["share"] is False and kwargs["server_name"] == "127.0.0.1"
    assert kwargs["max_file_size"] == 7_000_000 and kwargs["show_error"] is False
    assert "7 MB per file" in str(demo.config)


def test_space_model_lookup_order(monkeypatch, tmp_path):
    """DISTILL_MOS_SPACE_MODEL, else the library's order ($DISTILL_MOS_MODEL first; `test_api.py` checks the rest)."""
    folders = {}
    for name in ("space", "library"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for file in ("config.json", "preprocessor_config.json", "model.safetensors"):
            (folders[name] / file).symlink_to(ROOT / file)
    monkeypatch.setenv("DISTILL_MOS_DEVICE", "cpu")
    monkeypatch.setenv("DISTILL_MOS_MODEL", str(folders["library"]))
    monkeypatch.setenv("DISTILL_MOS_SPACE_MODEL", str(folders["space"]))
    assert settings.load_scorer().model.name_or_path == str(folders["space"])
    monkeypatch.delenv("DISTILL_MOS_SPACE_MODEL")
    assert settings.load_scorer().model.name_or_path == str(folders["library"])


def test_space_readme_front_matter():
    text = (ROOT / "space" / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "space/README.md starts with YAML front matter"
    front = dict(line.split(": ", 1) for line in match.group(1).splitlines() if ": " in line and not line.startswith(" "))
    assert front["sdk"] == "gradio"
    # the Space runs the gradio its front matter names: it must satisfy what the project declares (the `space`
    # extra), whatever gradio happens to be installed here
    from packaging.requirements import Requirement
    from packaging.version import Version

    # pyproject.toml's `space = [...]` extra (read with a regex: tomllib needs Python 3.11, the project allows 3.10)
    extra = re.search(r"^space = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    requirements = [Requirement(r) for r in re.findall(r'"([^"]+)"', extra)]
    declared = [r for r in requirements if r.name == "gradio"]
    assert len(declared) == 1, extra
    assert Version(front["sdk_version"]) in declared[0].specifier, (front["sdk_version"], str(declared[0]))
    assert front["app_file"] == "app.py"
    assert front["license"] == "mit"
    assert "distill-mos/distill-mos-v7" in match.group(1)
    assert (ROOT / "space" / "requirements.txt").is_file()
    assert (ROOT / "space" / "examples" / "LICENSE").read_text().startswith(
        (GENSPEECH / "LICENSE").read_text()[:200]
    )
