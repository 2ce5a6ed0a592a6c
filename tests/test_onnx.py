"""
ONNX export and the ONNX Runtime backend: parity with the PyTorch network to 1e-4 MOS, API and CLI; the cached
export is keyed by weights, config, modeling code and exporter versions, and verified before use (issue 11.9).
"""

import copy
import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import all_sample_files, require_module

onnx = require_module("onnx", "the onnx extra (in the test extra)")
require_module("onnxruntime", "the onnx extra (in the test extra)")

from distill_mos import onnx_backend  # noqa: E402
from distill_mos.onnx_backend import (  # noqa: E402
    OnnxCacheError,
    OnnxWindowScorer,
    check_digest,
    default_onnx_path,
    export_onnx,
    file_sha256,
    load_onnx_window_scorer,
    record_path,
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


# --- the cache: keyed by everything that shapes the graph, verified before use ----------------------------------------


class ConstantGraph(torch.nn.Module):
    """A stand-in with the real graph's inputs and outputs that rates every window 0.5, i.e. MOS 3.0."""

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return windows[:, 0] * 0 + 0.5


def write_stand_in(path: Path) -> None:
    torch.onnx.export(
        ConstantGraph(), (torch.zeros(2, 122880),), str(path), input_names=["windows"], output_names=["scores"],
        dynamic_axes={"windows": {0: "num_windows"}, "scores": {0: "num_windows"}}, opset_version=17, dynamo=False,
    )


def assert_scores_like_torch(model, scorer: OnnxWindowScorer) -> None:
    windows = speech_windows(3)
    with torch.inference_mode():
        expected = model.score_windows(windows)
    assert float((scorer(windows) - expected).abs().max()) * 4 <= TOLERANCE


def test_stand_in_graph_scores_everything_3(tmp_path):
    """The stand-in is what a swapped cache file silently did before: every file 3.0."""
    write_stand_in(tmp_path / "stand_in.onnx")
    assert OnnxWindowScorer(tmp_path / "stand_in.onnx")(speech_windows(2)).tolist() == [0.5, 0.5]


def test_swapped_in_cache_file_is_detected_by_its_digest_and_exported_again(model, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_MOS_CACHE", str(tmp_path))
    path = Path(load_onnx_window_scorer(model).path)
    assert path == default_onnx_path(model) and check_digest(path) is None
    write_stand_in(path)  # swapped in, its record left as it was
    assert "differ from the SHA-256 recorded" in check_digest(path)
    with pytest.warns(RuntimeWarning, match="differ from the SHA-256 recorded.*exporting it again"):
        scorer = load_onnx_window_scorer(model)
    assert_scores_like_torch(model, scorer)
    assert check_digest(path) is None  # the cache holds a good export again


def test_swapped_in_file_with_a_matching_record_fails_the_parity_check(model, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_MOS_CACHE", str(tmp_path))
    path = Path(load_onnx_window_scorer(model).path)
    write_stand_in(path)
    record = json.loads(record_path(path).read_text())
    record["sha256"] = file_sha256(path)  # the record rewritten too: only scoring can tell
    record_path(path).write_text(json.dumps(record))
    assert check_digest(path) is None
    with pytest.warns(RuntimeWarning, match="MOS away from torch.*exporting it again"):
        scorer = load_onnx_window_scorer(model)
    assert_scores_like_torch(model, scorer)


def test_a_named_file_that_fails_a_check_is_refused_not_overwritten(model, tmp_path):
    named = tmp_path / "mine.onnx"
    write_stand_in(named)  # no record: only the parity check can judge it
    before = named.read_bytes()
    with pytest.raises(OnnxCacheError, match=r"mine.onnx: not used: it scores a check window .* MOS away from torch"):
        load_onnx_window_scorer(model, named)
    assert named.read_bytes() == before
    good = export_onnx(model, tmp_path / "good.onnx")
    good.write_bytes(good.read_bytes() + b"\0")  # altered after export: its record no longer matches
    with pytest.raises(OnnxCacheError, match="differ from the SHA-256 recorded"):
        load_onnx_window_scorer(model, good)


def test_export_records_its_key_and_digest(model, tmp_path):
    onnx_file = export_onnx(model, tmp_path / "distillmos.onnx")
    record = json.loads(record_path(onnx_file).read_text())
    assert record["sha256"] == file_sha256(onnx_file)
    assert record["key"] == onnx_backend.cache_key(model)
    assert set(record["key"]) == {"model", "code", "torch", "onnx", "opset"}


def edited_modeling_code(tmp_path: Path, model) -> list[Path]:
    """The model's modeling file with one line added, as after an edit of the checkout."""
    modeling, backend = onnx_backend.code_files(model)
    edited = tmp_path / modeling.name
    edited.write_text(modeling.read_text() + "\n# an edit\n")
    return [edited, backend]


def test_cache_key_covers_weights_config_code_and_exporter_versions(model, tmp_path, monkeypatch):
    base = default_onnx_path(model)
    assert default_onnx_path(model) == base  # deterministic
    assert [p.name for p in onnx_backend.code_files(model)] == ["modeling_distillmos.py", "onnx_backend.py"]
    changed = {}
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    changed["weights"] = default_onnx_path(other)
    other = copy.deepcopy(model)
    other.config.window_batch_size = 12345
    changed["config"] = default_onnx_path(other)
    edited = edited_modeling_code(tmp_path, model)
    with monkeypatch.context() as patch:
        patch.setattr(onnx_backend, "code_files", lambda m: edited)
        changed["modeling code"] = default_onnx_path(model)
    with monkeypatch.context() as patch:
        modeling, backend = onnx_backend.code_files(model)
        edited_backend = tmp_path / backend.name
        edited_backend.write_text(backend.read_text() + "\n# an edit\n")
        patch.setattr(onnx_backend, "code_files", lambda m: [modeling, edited_backend])
        changed["backend code"] = default_onnx_path(model)
    for module, name in ((torch, "torch"), (onnx, "onnx")):
        with monkeypatch.context() as patch:
            patch.setattr(module, "__version__", "99.0.0")
            changed[name] = default_onnx_path(model)
    assert {what: path != base for what, path in changed.items()} == dict.fromkeys(changed, True)
    assert len(set(changed.values())) == len(changed)


def test_export_made_before_a_code_change_is_not_reused(model, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_MOS_CACHE", str(tmp_path / "cache"))
    old = Path(load_onnx_window_scorer(model).path)
    edited = edited_modeling_code(tmp_path, model)
    monkeypatch.setattr(onnx_backend, "code_files", lambda m: edited)
    new = Path(load_onnx_window_scorer(model).path)
    assert new != old and new.is_file() and old.is_file()
    old_key, new_key = (json.loads(record_path(p).read_text())["key"] for p in (old, new))
    assert old_key["code"] != new_key["code"] and old_key["model"] == new_key["model"]
