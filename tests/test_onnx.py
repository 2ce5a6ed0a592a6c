"""ONNX export and the ONNX Runtime backend: parity with the PyTorch network to 1e-4 MOS, API and CLI."""

import csv
from pathlib import Path

import pytest
import torch

from conftest import all_sample_files

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from distill_mos.onnx_backend import (  # noqa: E402
    OnnxWindowScorer,
    default_onnx_path,
    export_onnx,
    load_onnx_window_scorer,
)

TOLERANCE = 1e-4  # MOS


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "distillmos.onnx")


@pytest.fixture(scope="module")
def onnx_scorer(onnx_file) -> OnnxWindowScorer:
    return OnnxWindowScorer(onnx_file)


def speech_windows(count: int, window_length: int = 122880) -> torch.Tensor:
    import soundfile as sf

    clips = [sf.read(p, dtype="float32")[0] for p in all_sample_files() if sf.info(p).samplerate == 16000]
    speech = torch.from_numpy(__import__("numpy").concatenate(clips))
    starts = torch.linspace(0, len(speech) - window_length, count).long()
    return torch.stack([speech[s : s + window_length] for s in starts])


def test_graph_has_a_dynamic_batch(onnx_file):
    graph = onnx.load(str(onnx_file)).graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "windows" and out.name == "scores"
    assert inp.type.tensor_type.shape.dim[0].dim_param  # symbolic: any number of windows
    assert inp.type.tensor_type.shape.dim[1].dim_value == 122880


@pytest.mark.parametrize("batch", [1, 3])
def test_window_scores_match_torch(model, onnx_scorer, batch):
    torch.manual_seed(batch)
    windows = torch.cat([speech_windows(batch), torch.randn(1, 122880) * 0.05])
    with torch.inference_mode():
        expected = model.score_windows(windows)
    got = onnx_scorer(windows)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert float((got - expected).abs().max()) * 4 <= TOLERANCE


def test_scorer_backend_onnx_matches_torch_and_original(model, feature_extractor, onnx_file, original_file_scores):
    from distill_mos import DistillMOSScorer

    files = [str(p) for p in all_sample_files()[::5]]  # 4 files, 16 and 48 kHz
    scorer = DistillMOSScorer.from_pretrained(device="cpu", backend="onnx", onnx_path=onnx_file)
    assert isinstance(scorer.window_scorer, OnnxWindowScorer)
    for result in scorer.score_files(files):
        assert result.ok
        assert abs(result.mos - original_file_scores[result.path]) <= TOLERANCE, result.path


def test_backend_exports_on_first_use(model, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_MOS_CACHE", str(tmp_path))
    path = default_onnx_path(model)
    assert path.parent == tmp_path and not path.exists()
    scorer = load_onnx_window_scorer(model)
    assert path.is_file() and scorer.path == str(path)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    # a second load reuses the file
    mtime = path.stat().st_mtime_ns
    load_onnx_window_scorer(model)
    assert path.stat().st_mtime_ns == mtime


def test_cli_backend_onnx(onnx_file, original_file_scores, tmp_path):
    from distill_mos.cli import main

    files = [str(p) for p in all_sample_files()[1::6]]
    out = tmp_path / "scores.csv"
    assert main([*files, "--backend", "onnx", "--onnx-path", str(onnx_file), "--device", "cpu", "-o", str(out), "-q"]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == files
    for row in rows:
        assert abs(float(row["mos"]) - original_file_scores[row["file"]]) <= TOLERANCE


def test_unknown_backend_is_rejected():
    from distill_mos import DistillMOSScorer

    with pytest.raises(ValueError, match="backend"):
        DistillMOSScorer.from_pretrained(device="cpu", backend="tensorrt")
