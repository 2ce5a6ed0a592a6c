"""
The trainable part of Distill-MOS and its inputs: per-window features cached once, a collator for windows, and a
clip-level regression head whose forward is exactly the model's own window score.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from modeling_distillmos import DistillMOSModel, plan_windows

from ..audio import AudioFileError, load_audio
from .data import LabelledClip, RowIssue


@dataclass
class ClipWindows:
    """
    One clip ready for training: `inputs` is `(windows, frames=384, features=1024)` float32 conv-encoder features
    (cached mode) or `(windows, window_length)` raw 16 kHz waveform windows (`--train-all`).
    """

    clip: LabelledClip
    inputs: torch.Tensor


def clip_windows(waveform: np.ndarray, window_length: int, max_hop: int) -> torch.Tensor:
    """
    (samples,) 16 kHz -> `(windows, window_length)`: the model's windows of the clip (`plan_windows`), cut from the
    clip's own samples, the last or only one zero-padded, as `DistillMOSModel.forward` cuts them.
    """
    samples = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    windows = []
    for start in plan_windows(samples.shape[0], window_length, max_hop):
        window = samples[start : start + window_length]
        windows.append(F.pad(window, (0, window_length - window.shape[0])))
    return torch.stack(windows)


def normalize_windows(windows: torch.Tensor, eps: float) -> torch.Tensor:
    """Peak normalization per window, in the order of `DistillMOSModel._score_window_batch`: x / (max|x| + eps)."""
    peak = windows.abs().amax(dim=1, keepdim=True)
    return windows / (peak + eps)


def encode_windows(model: DistillMOSModel, windows: torch.Tensor, real_samples: int | None = None) -> torch.Tensor:
    """
    `(n, window_length)` waveform windows -> `(n, frames, conv_output_size)` features of the frozen convolutional
    feature encoder: peak normalization, spectrogram, convolutions, exactly as the model scores a window.
    `real_samples`: leading samples of every window that are audio (a short clip's one window): the convolutions then
    skip the zero padding as the model does (`config.skip_padded_frames`), with the same features.
    """
    spectrogram = model.spectrogram(normalize_windows(windows, model.config.normalization_eps))
    real_frames = None
    if real_samples is not None and model.config.skip_padded_frames:
        real_frames = model.spectrogram.frames_seeing_audio(real_samples, windows.shape[1])
    return model.feature_encoder(spectrogram, real_frames)


def decode_clip(clip: LabelledClip, feature_extractor, channel: str | int = "first") -> np.ndarray:
    """
    The clip's audio through the package's one decode path (first channel by default, torchaudio resampling to
    16 kHz): `(samples,)` float32. Raises `ValueError` with the reason (missing file, not audio, NaN samples, ...).
    """
    if isinstance(clip.audio, (str, bytes)) or hasattr(clip.audio, "__fspath__"):
        decoded = load_audio(clip.audio, channel)
        waveform, sampling_rate = decoded.waveform, decoded.sampling_rate
    else:
        from ..datasets import example_waveform  # `datasets` is only needed for dataset sources

        waveform, sampling_rate = example_waveform(clip.audio, channel)
    return feature_extractor.prepare_clip(waveform, sampling_rate, name="audio")


@torch.no_grad()
def prepare_clips(
    model: DistillMOSModel,
    feature_extractor,
    clips: Sequence[LabelledClip],
    *,
    cache_features: bool = True,
    channel: str | int = "first",
    chunk: int | None = None,
    progress=None,
) -> tuple[list[ClipWindows], list[RowIssue]]:
    """
    Decodes every clip, cuts it into the model's windows and, with `cache_features`, runs the frozen convolutional
    feature encoder on them once (it is ~90% of a window's FLOPs): 1.5 MB of float32 features per 7.68 s window.
    A clip that cannot be decoded is reported as a `RowIssue` and left out; the others are kept.
    """
    config = model.config
    device = model.device
    chunk = chunk or max(1, torch.get_num_threads())
    prepared, issues = [], []
    was_training = model.training
    model.eval()
    try:
        for clip in clips:
            try:
                waveform = decode_clip(clip, feature_extractor, channel)
            except AudioFileError as error:
                issues.append(RowIssue(clip.item, error.reason))
                continue
            except Exception as error:  # noqa: BLE001 - a decoder's or resampler's failure loses this row only
                issues.append(RowIssue(clip.item, str(error).replace("audio ", "", 1) if isinstance(error, ValueError)
                                       else f"could not be read: {type(error).__name__}: {error}"))
                continue
            if not waveform.any():
                issues.append(RowIssue(clip.item, "is silent (all samples are zero); it is kept, but its rating "
                                       "teaches the model nothing about speech", level="warning"))
            windows = clip_windows(waveform, config.window_length, config.max_window_hop)
            if cache_features:
                real = min(len(waveform), config.window_length)  # only a clip shorter than a window has padding
                windows = torch.cat([encode_windows(model, part.to(device), real).cpu() for part in windows.split(chunk)])
            prepared.append(ClipWindows(clip, windows))
            if progress is not None:
                progress.update(1)
    finally:
        model.train(was_training)
    return prepared, issues


class ClipDataset(torch.utils.data.Dataset):
    """Items for `Trainer`: `{"inputs": (windows, ...), "labels": MOS target}` per clip."""

    def __init__(self, clips: Sequence[ClipWindows]):
        self.clips = list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        return {"inputs": clip.inputs, "labels": torch.tensor(clip.clip.target, dtype=torch.float32)}


class WindowCollator:
    """
    Batches clips of different window counts for the head: all windows of the batch side by side, with the clip each
    window belongs to. Returns `inputs` `(total_windows, ...)`, `window_clip` `(total_windows,)` int64 and `labels`
    `(clips,)`.
    """

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        counts = [item["inputs"].shape[0] for item in items]
        batch = {
            "inputs": torch.cat([item["inputs"] for item in items]),
            "window_clip": torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts)),
        }
        if all("labels" in item for item in items):
            batch["labels"] = torch.stack([torch.as_tensor(item["labels"], dtype=torch.float32) for item in items])
        return batch


@dataclass
class ClipRegressionOutput(ModelOutput):
    """`loss` (MSE on the MOS scale, when labels are given) and `mos` `(clips,)`: the mean of each clip's windows."""

    loss: torch.FloatTensor | None = None
    mos: torch.FloatTensor | None = None


class DistillMOSClipRegressor(nn.Module):
    """
    Distill-MOS as a clip-level regressor for `Trainer`. The modules are the model's own (shared, not copied), so
    training updates `model` in place and it can be saved as it is.

    - `cached_features=True` (default): the input is the frozen convolutional feature encoder's output, computed
      once (`prepare_clips`); `model.encoder` (projection, transformer) and `model.pooling` are trained.
    - `cached_features=False` (`--train-all`): the input is raw waveform windows and every parameter is trained.

    `train_layers` (cached mode) narrows what trains: "head" (projection, transformer, pooling), "last" (the last
    transformer layer and the pooling) or "pooling". `loss` "clip" trains each clip's score (the mean of its
    windows) towards its label, "window" each window's score towards its clip's label.

    In both modes, the batch norms stay at their running statistics (eval mode even while training): their
    statistics came from the large distillation set, and a few clips per batch would only add noise. The model has
    no dropout. A clip's score is the mean of its windows' sigmoid outputs mapped to `mos_min..mos_max`, as the
    model scores.
    """

    def __init__(self, model: DistillMOSModel, cached_features: bool = True, train_layers: str = "head",
                 loss: str = "clip"):
        super().__init__()
        self.cached_features = cached_features
        self.loss = loss
        # not `self.config`: Trainer writes attributes (use_cache) into a `config` it finds, and we save that config
        self.mos_range = (model.config.mos_min, model.config.mos_max)
        if cached_features:
            self.encoder, self.pooling = model.encoder, model.pooling
        else:
            self.model = model
        for parameter in model.parameters():
            parameter.requires_grad_(not cached_features)
        for parameter in self.trained_parameters(model, train_layers if cached_features else "head"):
            parameter.requires_grad_(True)
        self._model = [model]  # not a submodule twice over: kept out of state_dict

    @staticmethod
    def trained_parameters(model: DistillMOSModel, train_layers: str) -> list[nn.Parameter]:
        """The parameters `train_layers` names (beside the convolutions with `--train-all`)."""
        modules = {"head": [model.encoder, model.pooling], "last": [model.encoder.layers[-1], model.pooling],
                   "pooling": [model.pooling]}[train_layers]
        return [parameter for module in modules for parameter in module.parameters()]

    def train(self, mode: bool = True) -> "DistillMOSClipRegressor":
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def window_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """`(windows, ...)` -> `(windows,)` sigmoid outputs in 0..1, as `DistillMOSModel._score_window_batch`."""
        model = self._model[0]
        features = inputs if self.cached_features else encode_windows(model, inputs)
        return torch.sigmoid(model.pooling(model.encoder(features)))

    def forward(
        self, inputs: torch.Tensor, window_clip: torch.Tensor, labels: torch.Tensor | None = None
    ) -> ClipRegressionOutput:
        """
        Args:
            inputs: `(total_windows, frames, features)` cached features, or `(total_windows, window_length)` waveform
                windows with `--train-all`.
            window_clip: `(total_windows,)` index of each window's clip in the batch.
            labels: `(clips,)` target MOS.
        """
        scores = self.window_scores(inputs)
        clips = int(window_clip.max()) + 1
        counts = torch.bincount(window_clip, minlength=clips).to(scores.dtype)
        mean = torch.zeros(clips, dtype=scores.dtype, device=scores.device).index_add(0, window_clip, scores) / counts
        mos_min, mos_max = self.mos_range
        mos = mos_min + (mos_max - mos_min) * mean
        loss = None
        if labels is not None and self.loss == "window":
            loss = F.mse_loss(mos_min + (mos_max - mos_min) * scores, labels.to(mos.dtype)[window_clip])
        elif labels is not None:
            loss = F.mse_loss(mos, labels.to(mos.dtype))
        return ClipRegressionOutput(loss=loss, mos=mos)


@torch.no_grad()
def predict(regressor: DistillMOSClipRegressor, clips: Sequence[ClipWindows], batch_size: int = 8) -> list[float]:
    """The MOS of each clip (1..5), in eval mode, `batch_size` clips at a time."""
    was_training = regressor.training
    regressor.eval()
    device = next(regressor.parameters()).device
    collate, dataset, scores = WindowCollator(), ClipDataset(clips), []
    try:
        for first in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(first, min(first + batch_size, len(dataset)))])
            output = regressor(batch["inputs"].to(device), batch["window_clip"].to(device))
            scores.extend(output.mos.float().cpu().tolist())
    finally:
        regressor.train(was_training)
    return scores
