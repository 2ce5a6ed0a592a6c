"""
Shared fixtures: the original distillmos model (the parity reference), ours, and the bundled test data.

In CI (the `CI` environment variable set, as CI services do) nothing may be skipped for lack of a package or a
console script: a missing reference package fails instead (`require_module`, `console_script`), and any other skip
fails too unless the test is marked `cuda` (the only allowed skip: no GPU on the machine).

Tolerances used across the tests, in MOS, each the measured deviation with a margin (measured on a 2-core AMD EPYC
with AVX-512, torch 2.14.1; CI may run on another x86-64 CPU, e.g. an Intel Xeon with AMX, whose float32 kernels
may sum in another order):
- 1e-4: ours against the original distillmos 0.9.1, the parity README documents. Measured max |delta| 1.4e-6 over
  every sample file through both CLIs, 4.8e-7 at 8 to 48 kHz and per window, 9.5e-7 on 24/48 kHz float WAVs.
- 1e-5: ours against ours on the same audio by another route (a padded batch vs each clip alone, batch sizes and
  order, datasets vs files, CLI vs API, worker threads vs not). Measured 0 (each window goes through the network
  alone on its core), and 2.2e-8 between a chunk of windows batched and scored one per core; the margin is for
  machines that split chunks of windows differently.
- 1e-6: the same computation twice (a reloaded model, int16 vs its float conversion). Measured 0.
- 0.0051: figures printed with two decimals (the original README's published scores, the Space's plot labels).
Tolerances outside these classes state their own measured figure where they are used.
"""

import csv
import importlib
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


def in_ci() -> bool:
    """Whether this run is CI's (`CI` set to anything but an empty string, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_module(name: str, why: str = "a test dependency (pip install -e \".[test]\")"):
    """`pytest.importorskip`, except that in CI a missing package fails: it must not hide a test there."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        message = f"{name} is not importable ({error}); it is {why}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def console_script(name: str) -> Path:
    """
    The console script `name` installed next to this interpreter (the venv's bin/), whether or not that folder is
    on PATH (e.g. `.venv/bin/python -m pytest` without activating). Missing: a skip, or a failure in CI.
    """
    path = Path(sys.executable).parent / name
    if not path.is_file():
        message = f"console script {name!r} is not installed next to {sys.executable}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skip is a failure, except for tests marked `cuda` on a machine without a GPU."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("cuda") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where only tests marked 'cuda' may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """In CI a whole module skipped at import (`pytest.importorskip` at module level) is a failure too."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"module skipped in CI, where only tests marked 'cuda' may skip: {reason}"


def all_sample_files() -> list[Path]:
    return sorted(DATA.glob("*/audio/**/*.wav"))


def genspeech_expected() -> dict[str, float]:
    """The original README's published scores for mfall/dir3 (file name -> MOS, to 0.005)."""
    with open(GENSPEECH / "reference_model_predictions_distillmos.csv") as handle:
        return {Path(row["file"]).stem: float(row["distillmos_expected"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def original_model():
    """The real original implementation, from the distillmos==0.9.1 wheel."""
    distillmos = require_module("distillmos", "the parity reference (distillmos==0.9.1, in the test extra)")
    return distillmos.ConvTransformerSQAModel().eval()


@pytest.fixture(scope="session")
def model():
    from modeling_distillmos import DistillMOSModel

    from distill_mos.engine import Execution

    model = DistillMOSModel.from_pretrained(str(ROOT))
    Execution().prepare(model)  # as DistillMOSScorer runs it: per-core window workers on CPU
    return model


@pytest.fixture(scope="session")
def feature_extractor():
    from feature_extraction_distillmos import DistillMOSFeatureExtractor

    return DistillMOSFeatureExtractor.from_pretrained(str(ROOT))


@pytest.fixture(scope="session")
def scorer(model, feature_extractor):
    from distill_mos import DistillMOSScorer

    return DistillMOSScorer(model, feature_extractor)


def original_cli_scores(paths) -> dict[str, float]:
    """
    The original CLI's own scores of `paths` ({path: MOS}): `distillmos.sqa._infer_file_list`, the function behind
    the `distillmos` command (torchaudio.load, first channel, `torchaudio.transforms.Resample(sr, 16000)`, its model).
    """
    sqa = require_module("distillmos.sqa", "the parity reference (distillmos==0.9.1, in the test extra)")
    return {str(path): score for path, score in sqa._infer_file_list([str(p) for p in paths])}


def original_file_score(original_model, path) -> float:
    """What the original CLI does for one file (a copy of distillmos.sqa._infer_file_list's body, for one model)."""
    import torchaudio

    x, sr = torchaudio.load(str(path))
    x = x[0, None, :]
    if sr != 16000:
        x = torchaudio.transforms.Resample(sr, 16000)(x)
    with torch.no_grad():
        return original_model(x).item()


@pytest.fixture(scope="session")
def original_file_scores():
    """The original CLI's scores of every bundled sample file (its own code: `original_cli_scores`), once per session."""
    return original_cli_scores(all_sample_files())
