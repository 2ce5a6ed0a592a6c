#!/usr/bin/env python
"""
Build the ONNX files of the Hub repository from the committed weights:

    python scripts/build_onnx_files.py                 # -> onnx/model.onnx, onnx/model_fp16.onnx
    python scripts/build_onnx_files.py -o /tmp/onnx    # elsewhere (tests/test_onnx_files.py rebuilds and compares)

Both hold the per-window network (what `DistillMOSModel.score_windows` computes): input `windows`, float32
`(n, 122880)` (7.68 s windows of 16 kHz mono audio, any n); output `scores`, float32 `(n,)`, each window's
quality in 0..1 (the sigmoid output; MOS = 1 + 4 * score). Windowing a clip and averaging its windows stay outside:
`onnx/distill_mos_onnx.py` does both in numpy. `model.onnx` is float32 (`distill_mos.onnx_backend.export_onnx`,
opset 17). `model_fp16.onnx` is the same graph with float16 weights and arithmetic from the first convolution on
(`onnxconverter_common.float16`); peak normalization and the spectrogram stay float32, as in the torch model in
float16 (a 1e-12 magnitude floor is 0 in float16), and its inputs and outputs stay float32.

The build is deterministic: the same weights, code, torch and onnx give the same bytes.
"""

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

from distill_mos.onnx_backend import OnnxWindowScorer, export_onnx, record_path  # noqa: E402
from export_onnx import speech_windows  # noqa: E402
from modeling_distillmos import DistillMOSModel  # noqa: E402

FLOAT32_NAME, FLOAT16_NAME = "model.onnx", "model_fp16.onnx"
# Node-name prefix of the network proper: every node before it (peak normalization, spectrogram) stays float32.
NETWORK_PREFIX = "/feature_encoder/"


def network_input(graph) -> str:
    """The one tensor the network proper takes from the float32 front end (peak normalization and spectrogram)."""
    first = next((i for i, node in enumerate(graph.node) if node.name.startswith(NETWORK_PREFIX)), None)
    if first is None:
        raise ValueError(f"no node named {NETWORK_PREFIX}... in the graph: the export's node names have changed")
    front = {name for node in graph.node[:first] for name in node.output} | {i.name for i in graph.input}
    crossing = {name for node in graph.node[first:] for name in node.input if name in front}
    if len(crossing) != 1:
        raise ValueError(f"the network takes {sorted(crossing)} from the front end, expected one tensor")
    return crossing.pop()


def build_float32(model: DistillMOSModel, path: Path) -> Path:
    """The float32 per-window network at `path` (the backend's exporter; its cache record is not kept)."""
    export_onnx(model, path)
    record_path(path).unlink(missing_ok=True)  # the cache record names this machine's versions: not for the Hub
    return path


def build_float16(float32_path: Path, path: Path) -> Path:
    """`float32_path` converted to float16 after the spectrogram, with float32 inputs and outputs."""
    import onnx
    import onnx.compose
    import onnx.utils
    from onnxconverter_common import float16

    model = onnx.shape_inference.infer_shapes(onnx.load(str(float32_path)))  # the cut below needs its tensor types
    (windows,), (scores,) = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    boundary = network_input(model.graph)
    # Two parts, joined again below: converting the whole graph with the front end on a block list still rounds its
    # constants through float16 (the 1e-12 magnitude floor becomes 0, and silent frames NaN).
    front = onnx.utils.Extractor(model).extract_model([windows], [boundary])
    network = onnx.utils.Extractor(model).extract_model([boundary], [scores])
    # The exported network's own Casts to float32 (`.float()`, scale factors computed from shapes) would keep
    # to=float32 on values the converter retypes as float16, which onnxruntime refuses: they cast to float16 instead.
    # (Not the Casts the converter adds at the float32 input and output, which must stay as they are.)
    network_casts = {node.name for node in network.graph.node if node.op_type == "Cast"}
    with warnings.catch_warnings():  # it reports each weight below float16's smallest normal it rounds (1e-7)
        warnings.simplefilter("ignore", UserWarning)
        network = float16.convert_float_to_float16(network, keep_io_types=True)
    for node in network.graph.node:
        if node.name in network_casts:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16
    for part in (front, network):  # the joint tensor is described by the parts' output and input: once is enough
        kept = [info for info in part.graph.value_info if info.name != boundary]
        del part.graph.value_info[:]
        part.graph.value_info.extend(kept)
    converted = onnx.compose.merge_models(front, network, io_map=[(boundary, boundary)])
    onnx.checker.check_model(converted)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        temporary = Path(handle.name)
    try:
        onnx.save(converted, str(temporary))
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def build(output_dir: Path, model_location: str | Path = ROOT) -> tuple[Path, Path]:
    """Writes `model.onnx` and `model_fp16.onnx` into `output_dir` from the model at `model_location`."""
    model = DistillMOSModel.from_pretrained(str(model_location)).eval()
    float32_path = build_float32(model, Path(output_dir) / FLOAT32_NAME)
    return float32_path, build_float16(float32_path, Path(output_dir) / FLOAT16_NAME)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "onnx")
    parser.add_argument("--model", default=str(ROOT), help="model folder (default: this checkout's weights)")
    args = parser.parse_args(argv)

    paths = build(args.output_dir, args.model)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # not its notes on float16 nodes it runs in float32 on this CPU
    model = DistillMOSModel.from_pretrained(args.model).eval()
    windows = torch.cat([speech_windows(model.config.window_length, 4), torch.zeros(1, model.config.window_length)])
    with torch.inference_mode():
        expected = model.score_windows(windows)
    scale = model.config.mos_max - model.config.mos_min
    for path in paths:
        delta = float((OnnxWindowScorer(path)(windows) - expected).abs().max()) * scale
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB): max |delta MOS| vs torch float32 on 5 windows = {delta:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
