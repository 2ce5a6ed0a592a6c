# Copyright the Distill-MOS for Hugging Face contributors (MIT licence).
"""
`pipeline("speech-quality-assessment", model=..., trust_remote_code=True)`: speech quality (MOS 1..5) of files,
arrays and datasets' audio values, registered in `config.json` under `custom_pipelines`.
"""

from typing import Any

import numpy as np
import torch
from transformers import Pipeline

TASK = "speech-quality-assessment"


def _decode_file(path: str) -> tuple[np.ndarray, int]:
    """An audio file -> (first channel as float32 (samples,), sampling rate), as the original `distillmos` CLI reads."""
    try:  # the package's one decode path (soundfile, then FFmpeg), when `distill-mos-hf` is installed
        from distill_mos.audio import load_audio
    except ImportError:
        load_audio = None
    if load_audio is not None:
        decoded = load_audio(path)
        return decoded.waveform, decoded.sampling_rate
    try:  # a Hub user with only transformers + torch: libsndfile formats through soundfile
        import soundfile
    except ImportError:
        raise ImportError(f"reading {path} needs `soundfile` (pip install soundfile), or pass a decoded array") from None
    samples, sampling_rate = soundfile.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(samples[:, 0]), int(sampling_rate)


class DistillMOSPipeline(Pipeline):
    """
    Predicts the mean opinion score (1 = bad .. 5 = excellent) of speech.

    Inputs: an audio file path; a 1-D numpy array or torch tensor (call with `sampling_rate=`); a dict
    `{"array": ..., "sampling_rate": ...}` (what 🤗 datasets' `Audio` gives, also `{"raw": ...}`); or a list of those.
    Any sampling rate (resampled to 16 kHz as the original does). `batch_size=` scores several clips per model call.

    Output per clip: `{"mos": float, "window_scores": [float, ...], "window_start_times": [seconds, ...]}`.

        >>> pipe = pipeline("speech-quality-assessment", model="distill-mos/distill-mos-v7", trust_remote_code=True)
        >>> pipe("speech.wav")["mos"]
    """

    _load_feature_extractor = True
    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False

    def _sanitize_parameters(
        self, sampling_rate: int | None = None, max_window_hop: int | None = None, **kwargs
    ) -> tuple[dict, dict, dict]:
        preprocess = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        forward = {} if max_window_hop is None else {"max_window_hop": max_window_hop}
        return preprocess, forward, {}

    def preprocess(self, inputs: Any, sampling_rate: int | None = None) -> dict[str, torch.Tensor]:
        if isinstance(inputs, str):
            waveform, sampling_rate = _decode_file(inputs)
        elif isinstance(inputs, dict):
            if "sampling_rate" not in inputs or not ("array" in inputs or "raw" in inputs):
                raise ValueError(
                    "an audio dict needs 'array' (or 'raw') and 'sampling_rate' keys, got keys "
                    f"{sorted(inputs)}."
                )
            waveform = inputs["array"] if "array" in inputs else inputs["raw"]
            sampling_rate = inputs["sampling_rate"]
        elif hasattr(inputs, "get_all_samples"):  # datasets 5's torchcodec AudioDecoder: first channel, as the CLI
            samples = inputs.get_all_samples()
            waveform, sampling_rate = samples.data[0].numpy(), int(samples.sample_rate)
        elif isinstance(inputs, (np.ndarray, torch.Tensor)):
            if sampling_rate is None:
                raise ValueError(
                    "a raw waveform needs its sampling rate: call the pipeline with sampling_rate=..., or pass "
                    "{'array': waveform, 'sampling_rate': rate}."
                )
            waveform = inputs
        else:
            raise ValueError(
                "the pipeline takes a file path, a numpy array or torch tensor (with sampling_rate=), or a dict with "
                f"'array' and 'sampling_rate'; got {type(inputs).__name__}."
            )
        return self.feature_extractor(waveform, sampling_rate=sampling_rate, return_tensors="pt")

    def _forward(self, model_inputs: dict[str, torch.Tensor], **forward_params) -> dict[str, torch.Tensor]:
        output = self.model(**model_inputs, **forward_params)
        # a plain dict of (batch, ...) tensors, so that the pipeline's batching can split it row by row
        return {
            "mos": output.mos,
            "window_scores": output.window_scores,
            "window_start_times": output.window_start_times,
            "window_mask": output.window_mask,
        }

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        mask = model_outputs["window_mask"][0]
        return {
            "mos": float(model_outputs["mos"][0]),
            "window_scores": model_outputs["window_scores"][0][mask].tolist(),
            "window_start_times": model_outputs["window_start_times"][0][mask].tolist(),
        }


__all__ = ["DistillMOSPipeline", "TASK"]
