"""
`distill-mos compare-systems` and `distill_mos.compare`: intervals on synthetic data with known means, Wilcoxon
p-values with and without a real difference (the statistic recomputed from ranks here), Holm on a worked example,
seeding, missing items, bad input, and folders of bundled GenSpeech clips scored for real (once, five clips) and
checked against the original distillmos model.
"""

import json
import math
import shutil

import numpy as np
import pytest

from conftest import GENSPEECH, original_file_score, require_module

pd = require_module("pandas")
stats = require_module("scipy.stats")
require_module("matplotlib")

from distill_mos.compare import CompareError, compare_systems, holm  # noqa: E402
from distill_mos.compare_cli import main as compare_main  # noqa: E402

MFALL = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall"


def _synthetic(n=300, shift=0.3, seed=7):
    """Means known exactly: A 3.0, B 3.0 + shift (really better), C 3.0 (A plus zero-mean noise)."""
    rng = np.random.default_rng(seed)

    def centred(scale):
        x = rng.normal(0, scale, n)
        return x - x.mean()

    a = 3.0 + centred(0.5)
    return {
        "A": {f"u{i}": float(v) for i, v in enumerate(a)},
        "B": {f"u{i}": float(v) for i, v in enumerate(a + shift + centred(0.2))},
        "C": {f"u{i}": float(v) for i, v in enumerate(a + centred(0.2))},
    }


def _ranked_wilcoxon(d: np.ndarray) -> tuple[float, float]:
    """Wilcoxon signed-rank from its definition: min(R+, R-), normal approximation (n > 50, no ties, no zeros)."""
    ranks = stats.rankdata(np.abs(d))
    r_plus, r_minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    n = len(d)
    z = (min(r_plus, r_minus) - n * (n + 1) / 4) / math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return min(r_plus, r_minus), 2 * stats.norm.cdf(z)


def test_intervals_and_tests_on_known_data():
    scores = _synthetic()
    c = compare_systems(scores, seed=0)
    systems = {s.system: s for s in c.systems}
    for name, true_mean in (("A", 3.0), ("B", 3.3), ("C", 3.0)):
        x = np.array(list(scores[name].values()))
        s = systems[name]
        assert s.n == 300 and s.mean_mos == pytest.approx(true_mean)
        assert s.ci_low < true_mean < s.ci_high
        # width: about 2 x 1.96 standard errors
        assert s.ci_high - s.ci_low == pytest.approx(2 * 1.96 * x.std(ddof=1) / math.sqrt(300), rel=0.15)

    pairs = {(q.system_a, q.system_b): q for q in c.pairs}
    assert list(pairs) == [("A", "B"), ("A", "C"), ("B", "C")]
    real, none = pairs["A", "B"], pairs["A", "C"]
    d = np.array([scores["B"][k] - scores["A"][k] for k in scores["A"]])
    assert real.n_common == 300 and real.mean_difference == pytest.approx(0.3)
    assert real.ci_low < 0.3 < real.ci_high and real.ci_low > 0.25
    assert real.ci_high - real.ci_low == pytest.approx(2 * 1.96 * d.std(ddof=1) / math.sqrt(300), rel=0.15)
    statistic, p = _ranked_wilcoxon(d)
    assert real.wilcoxon_statistic == statistic and real.p_value == pytest.approx(p, rel=1e-6)
    assert real.p_value < 1e-20 and real.significant
    d0 = np.array([scores["C"][k] - scores["A"][k] for k in scores["A"]])
    assert none.p_value == pytest.approx(_ranked_wilcoxon(d0)[1], rel=1e-6)
    assert none.p_value > 0.05 and not none.significant and none.ci_low < 0 < none.ci_high
    ps = [q.p_value for q in c.pairs]
    assert [q.p_holm for q in c.pairs] == pytest.approx(list(holm(ps)))


def test_holm_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.3, 0.9]) == pytest.approx([0.6, 0.9])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1, never below a smaller p's
    adjusted = holm([0.01, math.nan, 0.02])  # a pair without items does not count as a test
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_seeded_and_missing_items():
    scores = _synthetic(n=40)
    del scores["B"]["u3"]
    scores["C"]["u5"] = None  # failed to score
    first, again, other = (compare_systems(scores, seed=s) for s in (0, 0, 1))
    assert first.systems_frame().equals(again.systems_frame()) and first.pairs_frame().equals(again.pairs_frame())
    assert first.to_markdown() == again.to_markdown()
    assert not first.systems_frame()["ci_low"].equals(other.systems_frame()["ci_low"])
    assert first.missing == {"A": [], "B": ["u3"], "C": []}
    assert first.failed == {"A": [], "B": [], "C": ["u5"]}
    pairs = {(q.system_a, q.system_b): q for q in first.pairs}
    assert (pairs["A", "B"].n_common, pairs["A", "C"].n_common, pairs["B", "C"].n_common) == (39, 39, 38)
    assert [s.n for s in first.systems] == [40, 39, 39]
    assert "Missing items: B: 1." in first.to_markdown()
    assert set(map(tuple, first.missing_frame().values.tolist())) == {("B", "u3", "missing"), ("C", "u5", "failed")}


def test_two_lists_pair_by_position():
    """The Space's case: two uploads of the same utterances, in the same order."""
    c = compare_systems({"before": [2.0, 2.5, 3.0, 2.2], "after": [3.0, 3.1, 3.9, 3.0]})
    (q,) = c.pairs
    assert q.n_common == 4 and q.mean_difference == pytest.approx(np.mean([1.0, 0.6, 0.9, 0.8]))
    assert q.p_value == pytest.approx(stats.wilcoxon([1.0, 0.6, 0.9, 0.8]).pvalue)  # exact: 0.125 with n = 4
    figure = c.figure()
    assert len(figure.axes) == 2 and figure.axes[1].get_title().startswith("Paired differences")


def test_bad_input(tmp_path, capsys):
    with pytest.raises(CompareError, match="at least two systems"):
        compare_systems({"A": [3.0]})
    apart = compare_systems({"A": {"x": 3.0, "y": 3.2}, "B": {"z": 4.0, "w": 4.1}})
    assert apart.pairs[0].n_common == 0 and math.isnan(apart.pairs[0].p_value)
    assert any("no scored item in common" in n for n in apart.notes)

    table = pd.DataFrame({"system": ["A", "A", "B", "B"], "file": ["a/x.wav", "a/y.wav", "b/z.wav", "b/w.wav"],
                          "mos": [3.0, 3.2, 4.0, 4.1]})
    table.to_csv(tmp_path / "apart.csv", index=False)
    assert compare_main([str(tmp_path / "apart.csv"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no two systems have a scored file in common (A, B)" in err and "Traceback" not in err

    holes = pd.DataFrame({"system": ["A", "A", "B"], "file": ["a/x.wav", None, "b/x.wav"], "mos": [3.0, 3.1, 4.0]})
    holes.to_csv(tmp_path / "holes.csv", index=False)
    assert compare_main([str(tmp_path / "holes.csv"), "-o", str(tmp_path / "out")]) == 2
    assert "holes.csv: row 2 has no file to pair it by" in capsys.readouterr().err

    pd.DataFrame({"file": ["x.wav"], "mos": [3.0]}).to_csv(tmp_path / "one.csv", index=False)
    assert compare_main([str(tmp_path / "one.csv")]) == 2
    assert "needs a 'system' column" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert compare_main([str(tmp_path / "empty"), str(tmp_path / "empty2")]) == 2
    assert "empty2: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty2").mkdir()
    assert compare_main([str(tmp_path / "empty"), str(tmp_path / "empty2"), "-o", str(tmp_path / "o")]) == 2
    assert "no audio files in this folder" in capsys.readouterr().err


def test_one_scores_file_with_a_system_column(tmp_path, capsys):
    scores = _synthetic(n=30)
    rows = [{"system": s, "file": f"/data/{s}/{k}.wav", "mos": v} for s, items in scores.items() for k, v in items.items()]
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", index=False)
    assert compare_main([str(tmp_path / "all.csv"), "-o", str(tmp_path / "out"), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    expected = compare_systems(scores, seed=3)
    assert expected.to_markdown() in printed
    written = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert written["p_value"].tolist() == pytest.approx([q.p_value for q in expected.pairs])
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["seed"] == 3


def test_folders_scored_for_real(tmp_path, original_model, capsys, monkeypatch):
    """Three codecs as systems over mfall/dir1 and dir3; `ref` lacks dir3. Five clips scored once, then cached."""
    for codec, items in (("opus", ("dir1", "dir3")), ("melp", ("dir1", "dir3")), ("ref", ("dir1",))):
        for item in items:
            (tmp_path / codec).mkdir(exist_ok=True)
            shutil.copy(MFALL / item / f"{codec}.wav", tmp_path / codec / f"{item}.wav")
    out = tmp_path / "cmp"
    args = [str(tmp_path / c) for c in ("opus", "melp", "ref")] + ["-o", str(out), "--device", "cpu"]
    assert compare_main(args) == 0
    printed = capsys.readouterr().out
    assert "missing in ref (1): dir3.wav" in printed
    original = {(c, i): original_file_score(original_model, MFALL / i / f"{c}.wav")
                for c, i in (("opus", "dir1"), ("opus", "dir3"), ("melp", "dir1"), ("melp", "dir3"), ("ref", "dir1"))}
    systems = pd.read_csv(out / "systems.csv").set_index("system")
    for codec in ("opus", "melp"):
        assert systems.loc[codec, "n"] == 2
        assert systems.loc[codec, "mean_mos"] == pytest.approx((original[codec, "dir1"] + original[codec, "dir3"]) / 2, abs=1e-4)
    pairs = pd.read_csv(out / "pairs.csv")
    melp_opus = pairs[(pairs.system_a == "opus") & (pairs.system_b == "melp")].iloc[0]
    assert melp_opus.n_common == 2
    assert melp_opus.mean_difference == pytest.approx(
        np.mean([original["melp", i] - original["opus", i] for i in ("dir1", "dir3")]), abs=1e-4)
    assert pd.read_csv(out / "missing.csv").values.tolist() == [["ref", "dir3.wav", "missing"]]
    image = require_module("matplotlib.image").imread(out / "comparison.png")
    assert image.shape[0] > 100 and image[..., :3].std() > 0.05  # drawn, not blank
    assert "| opus | 2 |" in (out / "comparison.md").read_text()

    # a rerun scores nothing (every file is in OUTPUT/scores and unchanged) and gives the same table
    from distill_mos import scorer as scorer_module

    def refuse(*args, **kwargs):
        raise AssertionError("a rerun loaded the model")

    monkeypatch.setattr(scorer_module.DistillMOSScorer, "from_pretrained", refuse)
    before = (out / "comparison.md").read_text()
    assert compare_main(args) == 0
    assert (out / "comparison.md").read_text() == before
