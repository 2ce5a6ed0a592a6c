"""The `evaluate` metric module eval/mos_metrics, checked against scipy and numpy on known values."""

import math

import numpy as np
import pytest
from scipy import stats

from conftest import ROOT, require_module

evaluate = require_module("evaluate")


@pytest.fixture(scope="module")
def metric():
    # a folder of our own: loads with HF_EVALUATE_OFFLINE=1 (conftest), unlike evaluate.load("pearsonr")
    return evaluate.load(str(ROOT / "eval" / "mos_metrics"))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    references = rng.uniform(1, 5, size=40)
    predictions = np.clip(references + rng.normal(0, 0.6, size=40), 1, 5)
    systems = [f"sys{i % 7}" for i in range(40)]
    return predictions, references, systems


def test_loads_offline_by_relative_path(monkeypatch):
    monkeypatch.chdir(ROOT)
    metric = evaluate.load("eval/mos_metrics")
    result = metric.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[1.5, 2.0, 3.5, 4.0])
    assert result["n"] == 4
    assert result["srcc"] == pytest.approx(1.0) and result["ktau"] == pytest.approx(1.0)
    assert result["rmse"] == pytest.approx(math.sqrt(0.125))


def test_utterance_level_equals_scipy(metric, data):
    predictions, references, _ = data
    result = metric.compute(predictions=predictions.tolist(), references=references.tolist())
    assert result["n"] == 40
    assert result["pcc"] == pytest.approx(stats.pearsonr(predictions, references)[0], abs=1e-12)
    assert result["srcc"] == pytest.approx(stats.spearmanr(predictions, references)[0], abs=1e-12)
    assert result["ktau"] == pytest.approx(stats.kendalltau(predictions, references)[0], abs=1e-12)
    assert result["mse"] == pytest.approx(np.mean((predictions - references) ** 2), abs=1e-12)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((predictions - references) ** 2)), abs=1e-12)
    assert "system_pcc" not in result


def test_hand_computed_values(metric):
    # pcc of (1,2,3) vs (1,2,4): cov 1.5 / sqrt(1 * 2.333...) ; tau-b with a tie in predictions
    result = metric.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 2.0, 4.0])
    assert result["pcc"] == pytest.approx(1.5 / math.sqrt(1.0 * (7 / 3)), abs=1e-12)
    assert result["mse"] == pytest.approx(1 / 3) and result["rmse"] == pytest.approx(math.sqrt(1 / 3))
    reversed_ = metric.compute(predictions=[4.0, 3.0, 2.0, 1.0], references=[1.0, 2.0, 3.0, 4.0])
    assert reversed_["srcc"] == pytest.approx(-1.0) and reversed_["ktau"] == pytest.approx(-1.0)
    ties = metric.compute(predictions=[1.0, 1.0, 2.0, 3.0], references=[1.0, 2.0, 3.0, 4.0])
    assert ties["ktau"] == pytest.approx(5 / math.sqrt(5 * 6))  # tau-b: 5 concordant, 1 tied pair in predictions


def test_system_level_is_on_means_per_system(metric, data):
    predictions, references, systems = data
    result = metric.compute(predictions=predictions.tolist(), references=references.tolist(), systems=systems)
    ids = sorted(set(systems))
    mean_pred = np.array([np.mean([p for p, s in zip(predictions, systems) if s == i]) for i in ids])
    mean_ref = np.array([np.mean([r for r, s in zip(references, systems) if s == i]) for i in ids])
    assert result["n_systems"] == 7
    assert result["system_pcc"] == pytest.approx(stats.pearsonr(mean_pred, mean_ref)[0], abs=1e-12)
    assert result["system_srcc"] == pytest.approx(stats.spearmanr(mean_pred, mean_ref)[0], abs=1e-12)
    assert result["system_ktau"] == pytest.approx(stats.kendalltau(mean_pred, mean_ref)[0], abs=1e-12)
    assert result["system_rmse"] == pytest.approx(np.sqrt(np.mean((mean_pred - mean_ref) ** 2)), abs=1e-12)
    # the utterance-level figures are unchanged by giving systems
    assert result["pcc"] == pytest.approx(stats.pearsonr(predictions, references)[0], abs=1e-12)


def test_other_scales_get_correlations_but_no_rmse(metric, data):
    predictions, references, systems = data
    mushra = (references - 1) * 25  # 0..100
    result = metric.compute(predictions=predictions.tolist(), references=mushra.tolist(), systems=systems)
    assert result["mos_scale"] is False
    assert result["rmse"] is None and result["mse"] is None and result["system_rmse"] is None
    assert result["pcc"] == pytest.approx(stats.pearsonr(predictions, mushra)[0], abs=1e-12)
    assert result["srcc"] == pytest.approx(stats.spearmanr(predictions, references)[0], abs=1e-12)
    forced = metric.compute(predictions=predictions.tolist(), references=references.tolist(), mos_scale=False)
    assert forced["rmse"] is None and forced["pcc"] == pytest.approx(stats.pearsonr(predictions, references)[0])


def test_add_batch_accumulates(metric, data):
    predictions, references, _ = data
    for start in range(0, 40, 16):
        metric.add_batch(predictions=predictions[start:start + 16].tolist(), references=references[start:start + 16].tolist())
    result = metric.compute()
    assert result["n"] == 40
    assert result["pcc"] == pytest.approx(stats.pearsonr(predictions, references)[0], abs=1e-12)


def test_undefined_and_bad_inputs(metric):
    constant = metric.compute(predictions=[3.0, 3.0, 3.0], references=[1.0, 2.0, 3.0])
    assert math.isnan(constant["pcc"]) and math.isnan(constant["srcc"]) and constant["rmse"] == pytest.approx(math.sqrt(5 / 3))
    with pytest.raises(ValueError):
        metric.compute(predictions=[1.0, 2.0], references=[1.0, 2.0], systems=["a"])
    with pytest.raises(ValueError):
        metric.compute(predictions=[1.0, float("nan")], references=[1.0, 2.0])
