"""Precision: the model loads and scores in bfloat16 / float16 / float64 input, with the spectrogram kept in float32."""

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, all_sample_files

# Largest |bfloat16 - float32| over the bundled clips: 0.0091 MOS measured on an AMD EPYC (avx512_bf16) CPU, 0.0136
# on an H200 GPU; the bound for bfloat16 on CPU is 0.05.
BF16_BOUND = 0.05
# float16 on CPU: 0.0015 measured (AMD EPYC); 0.0019 on an H200.
FP16_BOUND = 0.01


def _bundled_clips(feature_extractor) -> list[np.ndarray]:
    clips = []
    for path in all_sample_files():
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        clips.append(feature_extractor.prepare_clip(audio[:, 0], rate))
    return clips


@pytest.fixture(scope="module")
def bundled(feature_extractor):
    return _bundled_clips(feature_extractor)


@pytest.fixture(scope="module")
def float32_scores(model, bundled):
    with torch.inference_mode():
        return np.array([float(model(torch.from_numpy(c)[None]).mos) for c in bundled])


def _auto_model(**kwargs):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(ROOT), trust_remote_code=True, **kwargs).eval()


@pytest.mark.parametrize(
    "kwargs, bound",
    [
        ({"dtype": torch.bfloat16}, BF16_BOUND),
        ({"torch_dtype": torch.bfloat16}, BF16_BOUND),  # the older keyword
        ({"dtype": torch.float16}, FP16_BOUND),
    ],
    ids=["bfloat16", "bfloat16-torch_dtype", "float16"],
)
def test_low_precision_scores_bundled_clips_close_to_float32(kwargs, bound, bundled, float32_scores):
    model = _auto_model(**kwargs)
    expected_dtype = next(iter(kwargs.values()))
    assert model.dtype == expected_dtype
    assert model.encoder.layers[0].attention.q_proj.weight.dtype == expected_dtype
    with torch.inference_mode():
        scores = np.array([float(model(torch.from_numpy(c)[None]).mos) for c in bundled])
    assert np.isfinite(scores).all()
    deviation = np.abs(scores - float32_scores)
    assert deviation.max() <= bound, f"max |dMOS| {deviation.max():.4f} over {len(bundled)} clips"
    assert deviation.max() > 0  # really computed in lower precision, not silently in float32


def test_spectrogram_stays_float32_and_the_network_runs_in_the_model_dtype(bundled):
    model = _auto_model(dtype=torch.bfloat16)
    seen = {}
    model.spectrogram.register_forward_hook(lambda m, args, out: seen.update(spectrogram=(args[0].dtype, out.dtype)))
    model.feature_encoder.register_forward_hook(lambda m, args, out: seen.update(convolutions=args[0].dtype))
    model.encoder.register_forward_hook(lambda m, args, out: seen.update(transformer=out.dtype))
    with torch.inference_mode():
        output = model(torch.from_numpy(bundled[0])[None])
    assert seen == {
        "spectrogram": (torch.float32, torch.float32),
        "convolutions": torch.bfloat16,
        "transformer": torch.bfloat16,
    }
    assert output.mos.dtype == torch.float32 and output.window_scores.dtype == torch.float32


def test_float64_input_is_accepted_and_scores_as_float32(model, bundled):
    clip = torch.from_numpy(bundled[1])[None]
    with torch.inference_mode():
        as_float32 = model(clip).mos
        as_float64 = model(clip.double()).mos
    assert as_float64.dtype == torch.float32
    assert torch.equal(as_float32, as_float64)  # the cast is exact (float32 -> float64 -> float32)


def test_float64_input_with_a_float64_model(bundled, float32_scores):
    """A float64 model (dtype=torch.float64) runs its network in float64 on a float32 spectrogram."""
    model = _auto_model(dtype=torch.float64)
    with torch.inference_mode():
        score = float(model(torch.from_numpy(bundled[0]).double()[None]).mos)
    assert abs(score - float32_scores[0]) < 1e-4  # measured 1e-6: float64 is the more exact of the two


def test_scorer_dtype_names_and_auto(monkeypatch):
    from distill_mos import scorer as scorer_module

    cpu = torch.device("cpu")
    assert scorer_module.resolve_dtype("float32", cpu) == torch.float32
    assert scorer_module.resolve_dtype(None, cpu) == torch.float32
    assert scorer_module.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert scorer_module.resolve_dtype(torch.float16, cpu) == torch.float16
    for bad in ("int8", "fp32", torch.int8):
        with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16 or auto"):
            scorer_module.resolve_dtype(bad, cpu)
    # auto follows what the CPU reports through torch (cpuid), not a guess
    for avx512_bf16, amx, expected in [(False, False, torch.float32), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda value=avx512_bf16: value)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda value=amx: value)
        assert scorer_module.resolve_dtype("auto", cpu) == expected


def test_scorer_from_pretrained_dtype(bundled, float32_scores):
    from distill_mos import DistillMOSScorer

    scorer = DistillMOSScorer.from_pretrained(str(ROOT), device="cpu", dtype="bfloat16")
    assert scorer.dtype == torch.bfloat16
    score = scorer.score_array(bundled[2], 16000).mos
    assert abs(score - float32_scores[2]) <= BF16_BOUND
    with pytest.raises(ValueError, match="ONNX backend runs in float32"):
        DistillMOSScorer.from_pretrained(str(ROOT), device="cpu", dtype="bfloat16", backend="onnx")


def test_a_convolution_dtype_the_cpu_lacks_is_a_clear_value_error(bundled, monkeypatch):
    model = _auto_model(dtype=torch.bfloat16)

    def refuse(*args, **kwargs):  # what oneDNN raises where it has no kernel for the dtype
        raise RuntimeError("could not create a primitive descriptor for the convolution forward propagation primitive")

    monkeypatch.setattr(model.feature_encoder, "forward", refuse)
    with pytest.raises(ValueError, match=r"this CPU cannot run the convolutions in torch.bfloat16 .*dtype=torch.float32"):
        with torch.inference_mode():
            model(torch.from_numpy(bundled[0])[None])


def test_tf32_guard_restores_the_callers_flags():
    from modeling_distillmos import _tf32_off

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        with _tf32_off():
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
        # overlapping users (threads scoring at once): TF32 stays off until the last one leaves
        first, second = _tf32_off(), _tf32_off()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert torch.backends.cudnn.allow_tf32 is False
        second.__exit__(None, None, None)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
