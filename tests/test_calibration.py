"""Score intervals calibrated on human MOS: split conformal, grouped folds, stored in the model (issue 19, point 3)."""

import csv
import hashlib
import json

import numpy as np
import pytest
from conftest import GENSPEECH, ROOT, TCDVOIP, require_module

from distill_mos.calibrate_cli import main as calibrate_main
from distill_mos.calibrate_cli import write_calibrated_copy
from distill_mos.calibration import (
    CalibrationError,
    MOSInterval,
    calibrate,
    conformal_half_width,
    grouped_coverage,
    to_mos_scale,
)

require_module("sklearn")
DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
LABELS = [GENSPEECH / "labels.csv", TCDVOIP / "labels.csv"]


def test_coverage_on_residuals_of_a_known_distribution():
    rng = np.random.default_rng(0)
    q = conformal_half_width(rng.normal(0, 0.5, 2000), 0.9)
    assert q == pytest.approx(1.6449 * 0.5, rel=0.05)  # the normal's 95th percentile of |r|
    assert 0.88 < np.mean(np.abs(rng.normal(0, 0.5, 200_000)) <= q) < 0.92
    # the finite-sample guarantee: with n = 19 calibration residuals, coverage is at least 90% on average
    covered = [np.mean(np.abs(rng.laplace(0, 1, 200)) <= conformal_half_width(rng.laplace(0, 1, 19), 0.9))
               for _ in range(3000)]
    assert np.mean(covered) >= 0.895


def test_coverage_is_measured_on_unseen_groups():
    """Each group's clips share one residual: a clip's twin in calibration would cover it, an unseen group not."""
    effects = np.array([0.1, 0.2, 0.3, 0.4, 1.5])
    residuals, groups = np.repeat(effects, 4), np.repeat(np.arange(5), 4)
    # leave one group out: the group with the largest residual is never covered by the other four
    assert grouped_coverage(residuals, groups, 0.9, folds=5) == (0.8, 5)
    with pytest.raises(CalibrationError, match="one group"):
        grouped_coverage(residuals, np.zeros(20), 0.9)


def test_too_few_labels_off_scale_labels_and_one_group_are_clear_errors():
    with pytest.raises(CalibrationError, match="too few"):
        calibrate([3.0] * 5, [3.5] * 5)
    with pytest.raises(CalibrationError, match="too few for a 90% interval"):
        conformal_half_width([0.1] * 8, 0.9)
    with pytest.raises(CalibrationError, match=r"off the scale 1\.\.5, e\.g\. 73 \(b\.wav\).*--label-range"):
        to_mos_scale([4.0, 73.0], (1, 5), names=["a.wav", "b.wav"])
    assert to_mos_scale([0.0, 50.0, 100.0], (0, 100)).tolist() == [1.0, 3.0, 5.0]
    with pytest.raises(CalibrationError, match="1 group"):
        calibrate(np.full(12, 3.0), np.full(12, 3.5), groups=["same"] * 12)


def labels_file(tmp_path, rows, name="labels.csv"):
    path = tmp_path / name
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "mos"])
        writer.writerows(rows)
    return path


def test_the_command_refuses_a_small_or_off_scale_label_file_before_scoring(tmp_path, capsys):
    names = sorted(p.name for p in DIR3.glob("*.wav"))
    for name in names:
        (tmp_path / name).symlink_to(DIR3 / name)
    small = labels_file(tmp_path, [(name, 3.0) for name in names[:5]], "small.csv")
    assert calibrate_main(["--labels", str(small), "--output-dir", str(tmp_path / "out")]) == 2
    assert "5 rated clips are too few" in capsys.readouterr().err
    mushra = labels_file(tmp_path, [(name, 20.0 * i) for i, name in enumerate(names)], "mushra.csv")
    assert calibrate_main(["--labels", str(mushra), "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "off the scale 1..5" in error and "--label-range LOW HIGH" in error
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def scorer():
    from distill_mos.scorer import DistillMOSScorer

    return DistillMOSScorer.from_pretrained(str(ROOT), device="cpu")


def test_a_calibrated_copy_reloads_its_interval_and_scores_carry_it(tmp_path, scorer):
    from distill_mos.cli import main
    from distill_mos.scorer import DistillMOSScorer

    interval = MOSInterval(coverage=0.9, half_width=0.4, empirical_coverage=0.875, folds=5, data="test.csv",
                           size=40, groups=8, group_column="ref_file")
    copy = write_calibrated_copy(str(ROOT), scorer, interval, tmp_path / "calibrated")
    reloaded = DistillMOSScorer.from_pretrained(str(copy), device="cpu")
    assert reloaded.interval == interval
    assert hashlib.sha256((copy / "model.safetensors").read_bytes()).digest() == \
        hashlib.sha256((ROOT / "model.safetensors").read_bytes()).digest()  # the weights, byte for byte
    assert reloaded.provenance.calibration == interval.to_config()
    assert scorer.interval is None and scorer.score_array(np.zeros(16000, np.float32) + 0.01, 16000).mos_low is None
    result = next(reloaded.score_files([str(DIR3 / "opus.wav")]))
    assert (result.mos_low, result.mos_high) == pytest.approx((result.mos - 0.4, min(5.0, result.mos + 0.4)))
    out = tmp_path / "s.csv"
    assert main([str(DIR3 / "opus.wav"), "--model", str(copy), "-o", str(out), "-q"]) == 0
    with open(out, newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["mos_high"]) - float(row["mos_low"]) == pytest.approx(0.8, abs=1e-5)
    assert json.loads((tmp_path / "s.csv.provenance.json").read_text())["calibration"]["half_width"] == 0.4


def test_calibrate_on_the_bundled_labels(tmp_path, capsys):
    """16 rated clips: far too few for a real interval, but the whole path runs (scores, folds, copy)."""
    argv = [arg for path in LABELS for arg in ("--labels", str(path))]
    assert calibrate_main([*argv, "--output-dir", str(tmp_path / "cal"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    stored = json.loads((tmp_path / "cal" / "config.json").read_text())["mos_interval"]
    assert (stored["size"], stored["groups"], stored["coverage"]) == (16, 16, 0.9)
    assert 0 < stored["half_width"] < 4 and 0 <= stored["empirical_coverage"] <= 1
    assert f"± {stored['half_width']:.3f} MOS" in printed and "held-out groups" in printed
    # the model's own config files are otherwise the released ones
    original = json.loads((ROOT / "config.json").read_text())
    copied = json.loads((tmp_path / "cal" / "config.json").read_text())
    assert {k: v for k, v in copied.items() if k != "mos_interval"} == original
    assert calibrate_main([*argv, "--output-dir", str(tmp_path / "cal")]) == 2  # not over an existing copy
