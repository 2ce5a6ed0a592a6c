"""Shared fixtures: the original distillmos model (the parity reference), ours, and the bundled test data."""

import csv
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
GENSPEECH = DATA / "genspeech"
TCDVOIP = DATA / "tcdvoip"
sys.path.insert(0, str(ROOT))

# Tests never reach a hub.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}.items():
    os.environ.setdefault(_name, _value)


def all_sample_files() -> list[Path]:
    return sorted(DATA.glob("*/audio/**/*.wav"))


def genspeech_expected() -> dict[str, float]:
    """The original README's published scores for mfall/dir3 (file name -> MOS, to 0.005)."""
    with open(GENSPEECH / "reference_model_predictions_distillmos.csv") as handle:
        return {Path(row["file"]).stem: float(row["distillmos_expected"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def original_model():
    """The real original implementation, from the distillmos==0.9.1 wheel."""
    distillmos = pytest.importorskip("distillmos")
    return distillmos.ConvTransformerSQAModel().eval()


@pytest.fixture(scope="session")
def model():
    from modeling_distillmos import DistillMOSModel

    return DistillMOSModel.from_pretrained(str(ROOT)).eval()


@pytest.fixture(scope="session")
def feature_extractor():
    from feature_extraction_distillmos import DistillMOSFeatureExtractor

    return DistillMOSFeatureExtractor.from_pretrained(str(ROOT))


@pytest.fixture(scope="session")
def scorer(model, feature_extractor):
    from distill_mos import DistillMOSScorer

    return DistillMOSScorer(model, feature_extractor)


def original_file_score(original_model, path) -> float:
    """Exactly what the original CLI does for one file (distillmos.sqa._infer_file_list)."""
    import torchaudio

    x, sr = torchaudio.load(str(path))
    x = x[0, None, :]
    if sr != 16000:
        x = torchaudio.transforms.Resample(sr, 16000)(x)
    with torch.no_grad():
        return original_model(x).item()


@pytest.fixture(scope="session")
def original_file_scores(original_model):
    """Original scores of every bundled sample file, computed once per session."""
    return {str(path): original_file_score(original_model, path) for path in all_sample_files()}
