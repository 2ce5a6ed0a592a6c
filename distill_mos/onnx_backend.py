"""
ONNX Runtime backend: the per-window network exported to ONNX (dynamic batch) and scored by onnxruntime.

Windowing and averaging stay in [`DistillMOSModel`]; only `score_windows` is replaced:

    from distill_mos.onnx_backend import load_onnx_window_scorer
    window_scorer = load_onnx_window_scorer(model)          # exports to ~/.cache/distill-mos/ on first use
    model(input_values, window_scorer=window_scorer)

`onnx` and `onnxruntime` are optional dependencies (`pip install distill-mos-hf[onnx]`); they are imported only here.
"""

import copy
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "windows", "scores"


class WindowNetwork(nn.Module):
    """The exported graph: `(n, window_length)` float32 waveform windows -> `(n,)` sigmoid outputs (0..1)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.model._score_window_batch(windows)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(
            f"the ONNX backend needs `{module}`: pip install onnx onnxruntime (or distill-mos-hf[onnx])"
        ) from error


def model_fingerprint(model) -> str:
    """Short hash of the model's weights and config: names the cached export, so new weights get a new file."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def default_onnx_path(model) -> Path:
    """`$DISTILL_MOS_CACHE` (default `~/.cache/distill-mos`) / `distillmos-<fingerprint>-opset17.onnx`."""
    cache = Path(os.environ.get("DISTILL_MOS_CACHE", Path.home() / ".cache" / "distill-mos"))
    return cache / f"distillmos-{model_fingerprint(model)}-opset{ONNX_OPSET}.onnx"


def export_onnx(model, path: str | os.PathLike, opset: int = ONNX_OPSET, check: bool = True) -> Path:
    """
    Exports the per-window network of `model` to `path` with a dynamic batch axis (TorchScript-based exporter; the
    STFT is exported as a strided convolution with a Hann-windowed DFT basis, since ONNX has no complex tensors).
    Writes atomically (a temporary file, then a rename), so concurrent processes never read a partial file.
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
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


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
    """An [`OnnxWindowScorer`] for `model`, exporting it first to `path` (default: `default_onnx_path(model)`) if the
    file does not exist yet."""
    _require("onnxruntime")
    path = Path(path) if path is not None else default_onnx_path(model)
    if not path.is_file():
        export_onnx(model, path)
    return OnnxWindowScorer(path, providers=providers, threads=threads)


__all__ = [
    "OnnxWindowScorer", "WindowNetwork", "default_onnx_path", "export_onnx", "load_onnx_window_scorer",
    "model_fingerprint",
]
