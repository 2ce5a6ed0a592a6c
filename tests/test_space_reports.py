"""
Issue 20 point 3 in the Space: the "Several files" tab shows the batch's MOS histogram, and the Compare tab compares
two sets of files as systems (means with bootstrap intervals, the paired difference, a Wilcoxon p-value, files not in
both), through the library's `corpus_report` and `compare` (figures from matplotlib, drawn to PNG downloads).
"""

import shutil

import numpy as np
import pytest
from conftest import GENSPEECH, require_module
from PIL import Image
from test_space_app import handlers

require_module("gradio", "the space extra (in the test extra)")
MFALL = GENSPEECH / "audio/LPCNet_listening_test/mfall"


def _drawn(path) -> bool:
    """A PNG with more than one colour in it: a figure was drawn, not a blank canvas."""
    path = path["path"] if isinstance(path, dict) else path  # a component's value is Gradio's file data
    pixels = np.asarray(Image.open(path).convert("L"))
    return pixels.size > 0 and pixels.std() > 5


def test_several_files_shows_the_histogram_of_the_batch(scorer):
    h = handlers(scorer)
    files = [str(MFALL / "dir3" / name) for name in ("ref.wav", "speex.wav", "opus.wav")]
    _, table, _ = h.score_many(files)
    image = h.batch_histogram(table)
    assert image.visible and _drawn(image.value)
    assert not h.batch_histogram(table.iloc[0:0]).visible  # nothing scored: no empty chart


def test_compare_tab_compares_two_systems_paired_by_file_name(scorer, tmp_path):
    h = handlers(scorer)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for sentence in ("dir1", "dir3"):  # the same two sentences through two codecs
        shutil.copy(MFALL / sentence / "opus.wav", a / f"{sentence}.wav")
        shutil.copy(MFALL / sentence / "speex.wav", b / f"{sentence}.wav")
    shutil.copy(MFALL / "dir3" / "melp.wav", b / "extra.wav")  # only system B has it
    files_a, files_b = sorted(map(str, a.iterdir())), sorted(map(str, b.iterdir()))
    text, figure = h.compare_systems(files_a, files_b)

    mos = {path: result.mos for path, result in zip(files_a + files_b, scorer.score_files(files_a + files_b))}
    mean_a = np.mean([mos[f] for f in files_a])
    mean_b = np.mean([mos[f] for f in files_b])
    difference = np.mean([mos[str(b / n)] - mos[str(a / n)] for n in ("dir1.wav", "dir3.wav")])
    assert f"| A | 2 | {mean_a:.3f} |" in text and f"| B | 3 | {mean_b:.3f} |" in text
    assert f"| B | A | 2 | {difference:.3f} |" in text
    assert "only in B: extra.wav" in text
    assert _drawn(figure)


@pytest.mark.parametrize("missing", ["a", "b"])
def test_compare_systems_asks_for_both_sets(scorer, missing):
    h = handlers(scorer)
    one = [str(MFALL / "dir3" / "opus.wav")]
    text, figure = h.compare_systems(None if missing == "a" else one, None if missing == "b" else one)
    assert "Upload the files of system **A** and of system **B**" in text and figure is None


def test_the_space_answer_names_what_made_the_score_and_checks_the_upload(model, feature_extractor):
    """Issue 19 in the Space: the JSON answer carries the scorer's provenance and, on by default there, the checks."""
    from distill_mos import DistillMOSScorer

    h = handlers(DistillMOSScorer(model, feature_extractor, checks=True))
    _, _, answer = h.score_one(str(MFALL / "dir3" / "opus.wav"))
    assert answer["provenance"] == h.space.scorer.provenance.to_dict()
    assert answer["provenance"]["precision"] == "float32"
    assert 0.4 < answer["checks"]["speech_share"] <= 1.0  # read speech


def test_checks_are_on_by_default_in_the_space(monkeypatch):
    import settings

    monkeypatch.delenv("DISTILL_MOS_CHECKS", raising=False)
    assert settings.scorer_kwargs()["checks"] is True
    monkeypatch.setenv("DISTILL_MOS_CHECKS", "0")
    assert settings.scorer_kwargs()["checks"] is False


def test_the_csv_download_neutralises_formula_file_names(scorer, tmp_path):
    """Issue 23 point 6: an upload named like a formula is written so that a spreadsheet shows it as text."""
    import csv

    named = tmp_path / "=cmd|' -C calc'!A0.wav"
    shutil.copy(MFALL / "dir3" / "opus.wav", named)
    _, _, csv_path = handlers(scorer).score_many([str(named)])
    with open(csv_path, newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["file"] == "'=cmd|' -C calc'!A0.wav" and float(row["mos"]) > 1
