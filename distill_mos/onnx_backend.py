"""
ONNX Runtime backend: the per-window network exported to ONNX (dynamic batch) and scored by onnxruntime.

Windowing and averaging stay in [`DistillMOSModel`]; only `score_windows` is replaced:

    from distill_mos.onnx_backend import load_onnx_window_scorer
    window_scorer = load_onnx_window_scorer(model)          # exports to ~/.cache/distill-mos/ on first use
    model(input_values, window_scorer=window_scorer)

The cached export is named by a key over everything that shapes the graph: the weights and config, the modeling code
(`modeling_distillmos.py` and this file) and the exporter (torch, onnx, opset), so a new model, a code change or a
new exporter gets a new file. Next to it, `<file>.json` records the key and the file's SHA-256. A cached file is used
only if its bytes match that digest and, on its first load in a process, one window scored by both torch and ONNX
Runtime agrees to `PARITY_TOLERANCE` MOS; otherwise it is exported again (a file the caller named is never
overwritten: it is refused with the reason).

`onnx` and `onnxruntime` are optional dependencies (`pip install distill-mos-hf[onnx]`); they are imported only here.
"""

import copy
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "windows", "scores"
PARITY_TOLERANCE = 1e-4  # MOS: largest |torch - onnxruntime| accepted on the check window
# (path, sha256) of files that passed the parity check in this process: checked once per process, not per load
_VERIFIED: set[tuple[str, str]] = set()


class OnnxCacheError(ValueError):
    """An ONNX file that must not be used: its bytes differ from its recorded digest, or it scores unlike torch."""


class WindowNetwork(nn.Module):
    """The exported graph: `(n, window_length)` float32 waveform windows -> `(n,)` sigmoid outputs (0..1)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.model._score_window_batch(windows)


def _require(module: str):
    message = f"the ONNX backend needs `{module}`: pip install onnx onnxruntime (or distill-mos-hf[onnx])"
    try:
        imported = __import__(module)
    except ImportError as error:
        raise ImportError(message) from error
    if getattr(imported, "__file__", None) is None:
        # a namespace package: this repository's onnx/ folder (the Hub's ONNX files), found where `onnx` is missing
        raise ImportError(f"{message} (`import {module}` found only the folder {list(imported.__path__)[0]})")
    return imported


def model_fingerprint(model) -> str:
    """Short hash of the model's weights and config."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def code_files(model) -> list[Path]:
    """The source files that define the exported graph: the model's modeling module and this backend."""
    module = sys.modules.get(type(model).__module__)
    modeling = Path(getattr(module, "__file__", None) or __import__("inspect").getfile(type(model)))
    return [modeling, Path(__file__)]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(model, opset: int = ONNX_OPSET) -> dict:
    """What the cached export depends on: weights and config, modeling code, exporter versions and opset."""
    onnx = _require("onnx")
    code = hashlib.sha256()
    for path in code_files(model):
        code.update(path.name.encode())
        code.update(path.read_bytes())
    return {
        "model": model_fingerprint(model),
        "code": code.hexdigest()[:16],
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": opset,
    }


def _key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def default_onnx_path(model) -> Path:
    """`$DISTILL_MOS_CACHE` (default `~/.cache/distill-mos`) / `distillmos-<cache key hash>-opset17.onnx`."""
    cache = Path(os.environ.get("DISTILL_MOS_CACHE", Path.home() / ".cache" / "distill-mos"))
    return cache / f"distillmos-{_key_hash(cache_key(model))}-opset{ONNX_OPSET}.onnx"


def record_path(path: str | os.PathLike) -> Path:
    """The JSON record written next to an export: `<file>.json` with its key and SHA-256."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def export_onnx(model, path: str | os.PathLike, opset: int = ONNX_OPSET, check: bool = True) -> Path:
    """
    Exports the per-window network of `model` to `path` with a dynamic batch axis (TorchScript-based exporter; the
    STFT is exported as a strided convolution with a Hann-windowed DFT basis, since ONNX has no complex tensors).
    Writes atomically (a temporary file, then a rename), so concurrent processes never read a partial file, and
    records the cache key and the file's SHA-256 in `<path>.json` (`record_path`).
    """
    _require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.device.type != "cpu" or model.dtype != torch.float32:
        model = copy.deepcopy(model).to("cpu", torch.float32)  # export on CPU in float32; leave the caller's model
    network = WindowNetwork(model).eval()
    example = torch.randn(2, model.config.window_length) * 0.1
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onstant folding.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                network,
                (example,),
                str(temporary),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "num_windows"}, OUTPUT_NAME: {0: "num_windows"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        if check:
            import onnx

            onnx.checker.check_model(str(temporary))
        record = {"sha256": file_sha256(temporary), "key": cache_key(model, opset)}
        temporary_record = record_path(temporary)
        temporary_record.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        os.replace(temporary, path)
        os.replace(temporary_record, record_path(path))
    finally:
        temporary.unlink(missing_ok=True)
        record_path(temporary).unlink(missing_ok=True)
    return path


def check_digest(path: str | os.PathLike) -> str | None:
    """
    Why `path` must not be used, judged by its record (`<file>.json`): None when its SHA-256 matches, else the
    reason. A file without a record (exported elsewhere) gets None: only the parity check can judge it.
    """
    record_file = record_path(path)
    if not record_file.is_file():
        return None
    try:
        recorded = json.loads(record_file.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its record {record_file.name} is unreadable"
    if file_sha256(path) != recorded:
        return f"its contents differ from the SHA-256 recorded in {record_file.name} when it was exported"
    return None


def parity_window(window_length: int) -> torch.Tensor:
    """A fixed speech-like check window, (1, window_length): a gliding harmonic tone with noise, peak 0.5."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(window_length, dtype=torch.float64) / 16000
    pitch = 2 * torch.pi * (120 * t + 15 * torch.sin(2 * torch.pi * 0.5 * t))
    tone = sum(torch.sin(k * pitch) / k for k in range(1, 6)) * (0.6 + 0.4 * torch.sin(2 * torch.pi * 3 * t))
    window = tone + 0.05 * torch.randn(window_length, generator=generator, dtype=torch.float64)
    return (0.5 * window / window.abs().max()).to(torch.float32)[None]


def parity_delta(model, scorer: "OnnxWindowScorer") -> float:
    """|torch - onnxruntime| in MOS on `parity_window`, torch in float32 on the CPU."""
    if model.device.type != "cpu" or model.dtype != torch.float32:
        model = copy.deepcopy(model).to("cpu", torch.float32)
    window = parity_window(model.config.window_length)
    with torch.inference_mode():
        expected = model.score_windows(window)
    got = scorer(window)
    return float((got - expected).abs().max()) * (model.config.mos_max - model.config.mos_min)


class OnnxWindowScorer:
    """
    `score_windows` on ONNX Runtime: call it with `(n, window_length)` windows (any device; scored on the session's
    providers) and get `(n,)` sigmoid outputs as a float32 tensor on the windows' device.

    Args:
        path: the exported `.onnx` file.
        providers: onnxruntime execution providers (default: CUDA if this onnxruntime has it, else CPU).
        threads: intra-op threads (default: `torch.get_num_threads()`).
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=providers)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        array = windows.detach().to("cpu", torch.float32).contiguous().numpy()
        (scores,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(np.asarray(scores, dtype=np.float32)).to(windows.device)


def load_onnx_window_scorer(
    model,
    path: str | os.PathLike | None = None,
    providers: list[str] | None = None,
    threads: int | None = None,
) -> OnnxWindowScorer:
    """
    An [`OnnxWindowScorer`] for `model`, verified before use (see the module docstring).

    Args:
        path: the ONNX file. Default: the cache (`default_onnx_path(model)`), exported there if missing, and exported
            again if the cached file fails a check. A file named here is exported if missing; if it fails a check it is
            refused with `OnnxCacheError`, never overwritten.
        providers, threads: as for [`OnnxWindowScorer`].
    """
    _require("onnxruntime")
    cached = path is None
    path = default_onnx_path(model) if cached else Path(path)
    if not path.is_file():
        export_onnx(model, path)
    scorer, problem = _verified_scorer(model, path, providers, threads)
    if problem is not None and cached:
        warnings.warn(f"{path}: {problem}; exporting it again", RuntimeWarning, stacklevel=2)
        export_onnx(model, path)
        scorer, problem = _verified_scorer(model, path, providers, threads)
    if problem is not None:
        raise OnnxCacheError(f"{path}: not used: {problem}")
    return scorer


def _verified_scorer(model, path: Path, providers, threads) -> tuple[OnnxWindowScorer | None, str | None]:
    """(a session on `path`, None) if the file passes the digest and parity checks, else (None, the reason)."""
    problem = check_digest(path)
    if problem is not None:
        return None, problem
    scorer = OnnxWindowScorer(path, providers=providers, threads=threads)
    problem = _check_parity(model, scorer)
    return (None, problem) if problem is not None else (scorer, None)


def _check_parity(model, scorer: OnnxWindowScorer) -> str | None:
    """None if this file (by path and digest) scored like torch in this process, else the reason; checked once."""
    identity = (str(Path(scorer.path).resolve()), file_sha256(scorer.path))
    if identity in _VERIFIED:
        return None
    delta = parity_delta(model, scorer)
    if not delta <= PARITY_TOLERANCE:  # also catches NaN
        return f"it scores a check window {delta:.2g} MOS away from torch (more than {PARITY_TOLERANCE:g})"
    _VERIFIED.add(identity)
    return None


__all__ = [
    "OnnxCacheError", "OnnxWindowScorer", "WindowNetwork", "cache_key", "check_digest", "default_onnx_path",
    "export_onnx", "load_onnx_window_scorer", "model_fingerprint", "parity_delta", "record_path",
]
