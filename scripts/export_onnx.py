#!/usr/bin/env python
"""
Export Distill-MOS's per-window network to ONNX (dynamic batch: `windows` (n, 122880) float32 -> `scores` (n,) in 0..1)
and check it against PyTorch with ONNX Runtime.

    python scripts/export_onnx.py                          # -> ~/.cache/distill-mos/distillmos-<hash>-opset17.onnx
    python scripts/export_onnx.py -o distillmos.onnx --batch 1 3

The file holds only the network on whole windows; cutting long audio into windows and averaging their scores stay in
`DistillMOSModel` (use `DistillMOSScorer.from_pretrained(backend="onnx")` or `distill-mos --backend onnx`).
Beside it, `<file>.json` records what the export depends on (weights and config, modeling code, torch and onnx
versions, opset) and the file's SHA-256; the backend checks both, and the scores, before using a file.
"""

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_mos.onnx_backend import OnnxWindowScorer, default_onnx_path, export_onnx, record_path  # noqa: E402
from distill_mos.scorer import default_model_location  # noqa: E402
from modeling_distillmos import DistillMOSModel  # noqa: E402


def speech_windows(window_length: int, count: int) -> torch.Tensor:
    """Windows cut from the bundled speech clips (tests/data), falling back to noise if they are absent."""
    import soundfile as sf

    clips = []
    for path in sorted((ROOT / "tests" / "data").glob("*/audio/**/*.wav")):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate == 16000:
            clips.append(torch.from_numpy(audio[:, 0]))
    if not clips:
        return torch.randn(count, window_length) * 0.1
    speech = torch.cat(clips)
    starts = torch.linspace(0, len(speech) - window_length, count).long()
    return torch.stack([speech[s : s + window_length] for s in starts])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: this checkout)")
    parser.add_argument("-o", "--output", type=Path, default=None, help="ONNX file (default: the backend's cache path)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes to check parity on")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest |delta MOS| allowed (default 1e-4)")
    args = parser.parse_args(argv)

    model = DistillMOSModel.from_pretrained(args.model or default_model_location()).eval()
    output = args.output or default_onnx_path(model)
    export_onnx(model, output, opset=args.opset)
    print(f"exported {output} ({output.stat().st_size / 1e6:.1f} MB, opset {args.opset}, dynamic batch)")
    print(f"record (cache key and SHA-256): {record_path(output)}")

    scorer = OnnxWindowScorer(output)
    scale = model.config.mos_max - model.config.mos_min
    worst = 0.0
    for batch in args.batch:
        for name, windows in (
            ("speech", speech_windows(model.config.window_length, batch)),
            ("noise", torch.randn(batch, model.config.window_length) * 0.1),
        ):
            with torch.inference_mode():
                expected = model.score_windows(windows)
            delta = float((scorer(windows) - expected).abs().max()) * scale
            worst = max(worst, delta)
            print(f"batch {batch:3d} {name:6s}: max |delta MOS| onnxruntime vs torch = {delta:.2e}")
    ok = worst <= args.tolerance
    print(f"parity {'OK' if ok else 'FAILED'}: {worst:.2e} {'<=' if ok else '>'} {args.tolerance:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
