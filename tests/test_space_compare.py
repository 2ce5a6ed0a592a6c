"""The Space's Compare tab and its `/compare` API (issue 11.4): two clips, both scores, B - A, both curves."""

import re

import numpy as np
import pytest
import soundfile

from conftest import GENSPEECH
from test_space_api import client, served  # noqa: F401 - the app on 127.0.0.1 and its gradio_client, shared fixtures
from test_space_app import load_space_app

app = load_space_app()
# the Space's modules (space/*.py), importable once app.py has put space/ on sys.path
import formatting  # noqa: E402
import scoring  # noqa: E402
import settings  # noqa: E402
from handlers import Handlers  # noqa: E402
CLIPS = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall"
BEFORE = CLIPS / "dir3" / "speex.wav"  # 7.8 s, the original README's 1.47
AFTER = CLIPS / "dir3" / "opus.wav"  # 7.8 s, 4.05
ONE_WINDOW = CLIPS / "dir1" / "lpcnu.wav"  # 7.0 s
POINT = re.compile(r'<circle class="mos-point" data-series="([^"]*)" cx="([\d.]+)" cy="([\d.]+)"')
X_TICK = re.compile(r'<g class="x-tick">.*?<text x="([\d.]+)"[^>]*>([^<]+)</text></g>')


def handlers(scorer):
    return Handlers(scoring.SpaceScorer(scorer, settings.Limits(), []))


def library(scorer, *paths):
    results = list(scorer.score_files(list(paths)))
    assert all(r.ok for r in results)
    return results


def test_compare_shows_both_scores_and_the_difference(scorer):
    a, b = library(scorer, BEFORE, AFTER)
    markdown, plot, result = handlers(scorer).compare(str(BEFORE), str(AFTER))
    assert f"B − A: {b.mos - a.mos:+.2f} MOS (B is rated better)" in markdown
    assert f"| **A** | speex.wav | {a.mos:.2f} | {formatting.acr_label(a.mos)} |" in markdown
    assert f"| **B** | opus.wav | {b.mos:.2f} | {formatting.acr_label(b.mos)} |" in markdown
    assert result["difference"] == pytest.approx(b.mos - a.mos, abs=1e-4)
    assert result["a"]["mos"] == pytest.approx(a.mos, abs=1e-4) and result["b"]["mos"] == pytest.approx(b.mos, abs=1e-4)
    assert result["a"]["window_scores"] == pytest.approx(a.window_scores, abs=1e-4)
    # swapping the clips flips the sign and the verdict
    markdown, _, swapped = handlers(scorer).compare(str(AFTER), str(BEFORE))
    assert swapped["difference"] == pytest.approx(-result["difference"], abs=1e-4) and "(A is rated better)" in markdown


def test_compare_plot_draws_both_curves_on_one_time_axis(scorer, tmp_path):
    long = tmp_path / "long.wav"  # 20 s: 14 windows, against a 7 s clip's one window
    speech = np.concatenate([soundfile.read(p, dtype="float32")[0] for p in (BEFORE, AFTER, ONE_WINDOW)])
    soundfile.write(long, speech[: 20 * 16000], 16000)
    a, b = library(scorer, ONE_WINDOW, long)
    _, plot, _ = handlers(scorer).compare(str(ONE_WINDOW), str(long))
    assert plot.visible is True
    points = POINT.findall(plot.value)
    series = {name for name, _, _ in points}
    assert series == {"A: lpcnu.wav", "B: long.wav"}
    drawn_a = [(float(x), float(y)) for name, x, y in points if name.startswith("A:")]
    drawn_b = [(float(x), float(y)) for name, x, y in points if name.startswith("B:")]
    assert (len(drawn_a), len(drawn_b)) == (len(a.window_scores), len(b.window_scores)) == (1, 14)
    # one time axis (0 .. 20 s, from the drawn ticks) for both: each point maps back to its own window centre
    ticks = [(float(x), float(label)) for x, label in X_TICK.findall(plot.value)]
    (x0, t0), (x1, t1) = ticks[0], ticks[-1]
    assert t0 == 0 and 15 <= t1 <= 20
    for drawn, result in ((drawn_a, a), (drawn_b, b)):
        times = [t0 + (x - x0) * (t1 - t0) / (x1 - x0) for x, _ in drawn]
        assert times == pytest.approx(formatting.window_centres(result), abs=0.01)
    assert plot.value.count('class="legend"') == 2


def test_compare_with_a_bad_clip_names_it_and_keeps_the_other_score(scorer, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    (a,) = library(scorer, BEFORE)
    markdown, _, result = handlers(scorer).compare(str(BEFORE), str(corrupt))
    assert "No difference: one of the clips has no meaningful score" in markdown
    assert f"| **A** | speex.wav | {a.mos:.2f} |" in markdown
    assert "| **B** | corrupt.wav | — |" in markdown and "Not a readable audio file" in markdown
    assert result["difference"] is None and result["b"]["error"] and result["a"]["mos"] == pytest.approx(a.mos, abs=1e-4)
    import gradio as gr

    with pytest.raises(gr.Error, match=r"Clip B \(corrupt.wav\): Not a readable audio file"):
        handlers(scorer).compare_api(str(BEFORE), str(corrupt))


def test_compare_asks_for_two_clips(scorer):
    markdown, plot, result = handlers(scorer).compare(str(BEFORE), None)
    assert "Give two clips" in markdown and plot.visible is False and result is None


def test_compare_api_through_gradio_client(scorer, client, tmp_path):  # noqa: F811
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    a, b = library(scorer, BEFORE, AFTER)
    result = client.predict(handle_file(str(BEFORE)), handle_file(str(AFTER)), api_name="/compare")
    assert result["difference"] == pytest.approx(b.mos - a.mos, abs=1e-4)
    for key, expected in (("a", a), ("b", b)):
        assert result[key]["mos"] == pytest.approx(expected.mos, abs=1e-4)
        assert result[key]["window_scores"] == pytest.approx(expected.window_scores, abs=1e-4)
        assert result[key]["window_start_times"] == pytest.approx(expected.window_start_times, abs=1e-4)
    assert (result["a"]["file"], result["b"]["file"]) == ("speex.wav", "opus.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match=r"Clip A \(empty.wav\): File is empty \(0 bytes\)"):
        client.predict(handle_file(str(empty)), handle_file(str(AFTER)), api_name="/compare")
