# Copyright the Distill-MOS for Hugging Face contributors (MIT licence).
"""
`pipeline("speech-quality-assessment", model=..., trust_remote_code=True)`: speech quality (MOS 1..5) of files,
arrays and datasets' audio values, registered in `config.json` under `custom_pipelines`.
"""

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

TASK = "speech-quality-assessment"


def _decode_file(path: str, feature_extractor) -> tuple[torch.Tensor, str | None]:
    """
    An audio file -> (its first channel at 16 kHz, (1, samples) float32; the decoder's warning or None), as the
    original `distillmos` CLI reads it. Errors name the file.
    """
    try:  # the package's one decode path (soundfile, then FFmpeg; in blocks, long audio spilled to disk)
        from distill_mos.audio import load_resampled
    except ImportError:
        load_resampled = None
    if load_resampled is not None:
        decoded = load_resampled(path, target_rate=feature_extractor.sampling_rate)
        return torch.from_numpy(decoded.waveform)[None], decoded.warning
    try:  # a Hub user with only transformers + torch: libsndfile formats through soundfile
        import soundfile
    except ImportError:
        raise ImportError(f"reading {path} needs `soundfile` (pip install soundfile), or pass a decoded array") from None
    samples, sampling_rate = soundfile.read(path, dtype="float32", always_2d=True)
    try:
        return _features(feature_extractor, np.ascontiguousarray(samples[:, 0]), int(sampling_rate))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _features(feature_extractor, waveform, sampling_rate) -> tuple[torch.Tensor, str | None]:
    """One clip through the feature extractor -> ((1, samples) float32 at 16 kHz, its warnings joined, or None)."""
    with warnings.catch_warnings(record=True) as caught:  # silent, very short: the output's `warning` field
        warnings.simplefilter("always", UserWarning)
        features = feature_extractor(waveform, sampling_rate=sampling_rate, return_tensors="pt")
    notes = [str(w.message).rstrip(".") for w in caught if issubclass(w.category, UserWarning)]
    return features["input_values"], "; ".join(notes) or None


def _is_many(inputs) -> bool:
    """A list, tuple, iterator (generator) or dataset of inputs, which the pipeline scores one by one."""
    return isinstance(inputs, (list, tuple, Iterator, torch.utils.data.Dataset)) or type(inputs).__name__ in (
        "Dataset", "IterableDataset"
    )


class DistillMOSPipeline(Pipeline):
    """
    Predicts the mean opinion score (1 = bad .. 5 = excellent) of speech.

    Inputs: an audio file path; a 1-D numpy array or torch tensor (call with `sampling_rate=`); a dict
    `{"array": ..., "sampling_rate": ...}` (what 🤗 datasets' `Audio` gives, also `{"raw": ...}`); or a list of those.
    Any sampling rate (resampled to 16 kHz as the original does). `batch_size=` scores several clips per model call.

    Output per clip: `{"mos": float, "window_scores": [float, ...], "window_start_times": [seconds, ...],
    "warning": str or None, "error": None}`; in a list, a bad input gives `mos` None and the reason in `error`.

        >>> pipe = pipeline("speech-quality-assessment", model="distill-mos/distill-mos-v7", trust_remote_code=True)
        >>> pipe("speech.wav")["mos"]
    """

    _load_feature_extractor = True
    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False

    def __call__(self, inputs, *args, **kwargs):
        """
        Scores one input, or a list, dataset or generator of them. For several inputs a bad one does not lose the
        others' results: its output has `mos` None and the reason (naming the file) in `error`. A single bad input
        raises a ValueError instead (pass `errors="record"` to get the output with `error` set).
        """
        if _is_many(inputs):
            kwargs.setdefault("errors", "record")
        return super().__call__(inputs, *args, **kwargs)

    def _sanitize_parameters(
        self, sampling_rate: int | None = None, max_window_hop: int | None = None, errors: str | None = None, **kwargs
    ) -> tuple[dict, dict, dict]:
        preprocess = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        if errors is not None:
            if errors not in ("raise", "record"):
                raise ValueError(f"errors must be 'raise' or 'record', got {errors!r}.")
            preprocess["errors"] = errors
        forward = {} if max_window_hop is None else {"max_window_hop": max_window_hop}
        return preprocess, forward, {}

    def preprocess(self, inputs: Any, sampling_rate: int | None = None, errors: str = "raise") -> dict[str, Any]:
        try:
            input_values, warning = self._input_values(inputs, sampling_rate)
        except (ValueError, OSError) as error:
            if errors != "record":
                raise
            input_values, warning = torch.zeros(1, 1), None
            failure = str(error)
        else:
            failure = None
        # `lengths` instead of an attention mask: batches pad `input_values`, and a mask as long as hours of audio
        # would cost as much memory as the audio; strings ride along as lists in batches
        length = 0 if failure else input_values.shape[-1]
        return {"input_values": input_values, "lengths": torch.tensor([length]), "warning": warning, "error": failure}

    def _input_values(self, inputs: Any, sampling_rate: int | None) -> tuple[torch.Tensor, str | None]:
        if isinstance(inputs, str):
            return _decode_file(inputs, self.feature_extractor)
        if isinstance(inputs, dict):
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
        return _features(self.feature_extractor, waveform, sampling_rate)

    def _forward(self, model_inputs: dict[str, Any], **forward_params) -> dict[str, Any]:
        errors = model_inputs["error"] if isinstance(model_inputs["error"], list) else [model_inputs["error"]]
        warnings_ = model_inputs["warning"] if isinstance(model_inputs["warning"], list) else [model_inputs["warning"]]
        input_values, lengths = model_inputs["input_values"], model_inputs["lengths"]
        good = [row for row, error in enumerate(errors) if error is None]
        batch = len(errors)
        mos = torch.full((batch,), float("nan"))
        window_scores = window_start_times = torch.full((batch, 1), float("nan"))
        window_mask = torch.zeros((batch, 1), dtype=torch.bool)
        if good:
            if len(good) < batch:
                input_values, lengths = input_values[good], lengths[good]
            mask = None
            if input_values.shape[0] > 1:  # a padded batch: the lengths say which samples are the clips'
                mask = (torch.arange(input_values.shape[1], device=lengths.device)[None] < lengths[:, None]).long()
            output = self.model(input_values=input_values, attention_mask=mask, **forward_params)
            windows = output.window_scores.shape[1]
            mos = mos.to(output.mos)
            window_scores = torch.full((batch, windows), float("nan")).to(output.window_scores)
            window_start_times = torch.full((batch, windows), float("nan")).to(output.window_start_times)
            window_mask = torch.zeros((batch, windows), dtype=torch.bool, device=output.window_mask.device)
            rows = torch.tensor(good, device=output.mos.device)
            mos[rows], window_scores[rows] = output.mos, output.window_scores
            window_start_times[rows], window_mask[rows] = output.window_start_times, output.window_mask
        # a plain dict of (batch, ...) tensors and lists, so that the pipeline's batching can split it row by row
        return {
            "mos": mos,
            "window_scores": window_scores,
            "window_start_times": window_start_times,
            "window_mask": window_mask,
            "warning": warnings_,
            "error": errors,
        }

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        def first(value):
            return value[0] if isinstance(value, list) else value

        error, warning = first(model_outputs["error"]), first(model_outputs["warning"])
        if error is not None:
            return {"mos": None, "window_scores": [], "window_start_times": [], "warning": warning, "error": error}
        mask = model_outputs["window_mask"][0]
        return {
            "mos": float(model_outputs["mos"][0]),
            "window_scores": model_outputs["window_scores"][0][mask].tolist(),
            "window_start_times": model_outputs["window_start_times"][0][mask].tolist(),
            "warning": warning,
            "error": None,
        }


__all__ = ["DistillMOSPipeline", "TASK"]
