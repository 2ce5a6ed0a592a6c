#!/usr/bin/env python
"""
int8 probe (issue 12, point 4): post-training static quantization of the convolution stack, measured, not adopted.

The five strided 3x3 convolutions after the first run as int8 (torch.ao eager-mode quantization, `x86` engine: fbgemm
VNNI kernels; weights per-channel symmetric int8, activations uint8 with a histogram observer), calibrated on the
first window of every other bundled clip; the first convolution (2 input channels, ~1% of the FLOPs, the most sensitive
to 8-bit input) and the transformer run in bfloat16 as in `dtype=torch.bfloat16`. Prints, per variant, the CPU time per
window on one thread (process time, best of 3: robust to a shared machine) beside float32 and bfloat16, and the
deviation from exact float32 on the bundled clips (also on the held-out half) and on synthetic lengths of 1-60 s.

    python bench/int8_probe.py        # writes bench/results/int8_probe_<cpu>.json

torch.ao.quantization is deprecated (torch 2.14 warns that it and quantized tensors will be removed; the pt2e /
X86InductorQuantizer route moved to torchao, which is not a dependency and needs torch.compile).
"""

import copy
import json
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from benchmark import RATE, SYNTHETIC_LENGTHS_S, WINDOW, cpu_report, deviation_stats, load_text, print_cpu_report, results_path, speech_source  # noqa: E402


def int8_stack(layers: nn.ModuleList, first_int8: int, last_int8: int, reduce_range: bool) -> nn.Module:
    """Conv layers [first_int8, last_int8) quantized, the others left float (run outside this module)."""
    import torch.ao.quantization as tq

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.body = nn.Sequential(*[m for layer in layers[first_int8:last_int8]
                                        for m in (copy.deepcopy(layer.conv).float(), nn.LeakyReLU(layer.activation.negative_slope))])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dequant(self.body(self.quant(x)))

    stack = Stack().eval()
    stack.qconfig = tq.QConfig(activation=tq.HistogramObserver.with_args(reduce_range=reduce_range),
                               weight=tq.default_per_channel_weight_observer)
    return stack


def quantize(model, variant: dict, calibration: list[np.ndarray]):
    """Returns a bfloat16 model whose conv stack runs layers [first, last) in int8 (a copy; `model` is unchanged)."""
    import torch.ao.quantization as tq

    from modeling_distillmos import _fused_conv_leaky_relu

    first, last, reduce_range = variant["first_int8"], variant["last_int8"], variant["reduce_range"]
    quantized = copy.deepcopy(model)
    layers = quantized.feature_encoder.conv_layers
    stack = int8_stack(layers, first, last, reduce_range)
    tq.prepare(stack, inplace=True)

    def run(self, spectrogram: torch.Tensor) -> torch.Tensor:
        hidden = spectrogram.contiguous(memory_format=torch.channels_last)
        for layer in layers[:first]:  # bfloat16, fused conv + LeakyReLU as the model does
            hidden = _fused_conv_leaky_relu(layer, hidden)
        hidden = stack(hidden.float()).to(spectrogram.dtype)
        for layer in layers[last:]:
            hidden = _fused_conv_leaky_relu(layer, hidden.contiguous(memory_format=torch.channels_last))
        return hidden.flatten(1, 2).transpose(1, 2)

    quantized.feature_encoder.forward = types.MethodType(run, quantized.feature_encoder)
    with torch.inference_mode():
        for clip in calibration:  # observers see the first window of each calibration clip
            quantized.score_windows(torch.from_numpy(np.resize(clip, WINDOW).astype(np.float32))[None])
    tq.convert(stack, inplace=True)
    return quantized


def cpu_seconds_per_window(model, windows: torch.Tensor, repeats: int = 3) -> float:
    """Process CPU time per window on one thread (no worker pool), best of `repeats`."""
    with torch.inference_mode():
        model._score_window_batch(windows)
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            model._score_window_batch(windows)
            best = min(best, time.process_time() - start)
    return best / windows.shape[0]


def main() -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from feature_extraction_distillmos import DistillMOSFeatureExtractor
    from modeling_distillmos import DistillMOSModel

    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    info = cpu_report()
    print_cpu_report(info)
    print(f"quantized engine: {torch.backends.quantized.engine}; load average at start: {load_text()}")
    extractor = DistillMOSFeatureExtractor()
    paths = sorted((ROOT / "tests" / "data").glob("*/audio/**/*.wav"))
    clips = [extractor.prepare_clip(sf.read(p, dtype="float32", always_2d=True)[0][:, 0], sf.info(p).samplerate)
             for p in paths]
    source = speech_source()
    synthetic = [np.resize(np.roll(source, -i * 51_111), int(round(s * RATE))).astype(np.float32)
                 for i, s in enumerate(SYNTHETIC_LENGTHS_S)]
    exact = DistillMOSModel.from_pretrained(str(ROOT)).eval()
    bf16 = DistillMOSModel.from_pretrained(str(ROOT), dtype=torch.bfloat16).eval()
    for model in (exact, bf16):
        model.cpu_window_threads = False  # one thread, one window at a time: CPU time per window is comparable

    def scores(model, material):
        with torch.inference_mode():
            return [float(model(torch.from_numpy(c)[None]).mos) for c in material]

    reference_clips, reference_synthetic = scores(exact, clips), scores(exact, synthetic)
    windows = torch.from_numpy(np.stack([np.resize(np.roll(source, -i * 37_337), WINDOW) for i in range(2)]).astype(np.float32))
    variants = {
        "bfloat16 (reference)": None,
        "int8 conv 1-6, reduce_range (x86 default qconfig)": {"first_int8": 0, "last_int8": 6, "reduce_range": True},
        "int8 conv 1-6": {"first_int8": 0, "last_int8": 6, "reduce_range": False},
        "int8 conv 2-6 (conv 1 bfloat16)": {"first_int8": 1, "last_int8": 6, "reduce_range": False},
        "int8 conv 2-5 (conv 1, 6 bfloat16)": {"first_int8": 1, "last_int8": 5, "reduce_range": False},
    }
    report = {"machine": info, "load_average_start": load_text(), "threads": 1,
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "calibration": "first window of bundled clips 0, 2, 4, ...",
              "float32_cpu_s_per_window": cpu_seconds_per_window(exact, windows), "variants": {}}
    print(f"float32: {report['float32_cpu_s_per_window']:.4f} CPU s per window (1 thread)")
    print(f"\n{'variant':<50} {'CPU s/w':>8} {'x bf16':>7} {'clips mean':>10} {'held-out':>9} {'clips max':>9} "
          f"{'1-60 s mean':>11} {'1-60 s max':>10} {'PCC all':>8}")
    bf16_time = None
    for name, variant in variants.items():
        model = bf16 if variant is None else quantize(bf16, variant, clips[::2])
        seconds = cpu_seconds_per_window(model, windows)
        bf16_time = bf16_time or seconds
        out_clips, out_synthetic = scores(model, clips), scores(model, synthetic)
        on_clips = deviation_stats(out_clips, reference_clips)
        held_out = deviation_stats(out_clips[1::2], reference_clips[1::2])
        on_synthetic = deviation_stats(out_synthetic, reference_synthetic)
        overall = deviation_stats(out_clips + out_synthetic, reference_clips + reference_synthetic)
        report["variants"][name] = {"config": variant, "cpu_s_per_window": seconds, "x_bfloat16": bf16_time / seconds,
                                    "bundled": on_clips, "bundled_held_out": held_out, "synthetic": on_synthetic,
                                    "all": overall, "load_average": load_text()}
        print(f"{name:<50} {seconds:>8.4f} {bf16_time / seconds:>7.2f} {on_clips['mean_abs']:>10.4f} "
              f"{held_out['mean_abs']:>9.4f} {on_clips['max_abs']:>9.4f} {on_synthetic['mean_abs']:>11.4f} "
              f"{on_synthetic['max_abs']:>10.4f} {overall['pcc']:>8.5f}", flush=True)
    report["load_average_end"] = load_text()
    print(f"\nload average at end: {report['load_average_end']}; deviations against exact float32.")
    path = results_path(info, "int8_probe")
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
