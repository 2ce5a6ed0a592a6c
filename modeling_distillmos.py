# Copyright (c) Microsoft Corporation (original Distill-MOS architecture and weights, MIT licence).
# Copyright the Distill-MOS for Hugging Face contributors (this port, MIT licence).
"""PyTorch Distill-MOS: a compact speech-quality (MOS) estimator, ported from PyPI `distillmos` 0.9.1."""

import contextlib
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

try:
    from .configuration_distillmos import DistillMOSConfig
except ImportError:  # installed as top-level modules rather than loaded as Hub remote code
    from configuration_distillmos import DistillMOSConfig


@dataclass
class DistillMOSOutput(ModelOutput):
    """
    Output of [`DistillMOSModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): mean squared error against `labels`, when given.
        mos (`torch.FloatTensor` of shape `(batch,)`): predicted mean opinion score of each clip, 1 (bad) to 5
            (excellent): the mean of its windows' scores.
        window_scores (`torch.FloatTensor` of shape `(batch, max_windows)`): score of each analysis window, NaN past
            a clip's last window.
        window_start_times (`torch.FloatTensor` of shape `(batch, max_windows)`): start of each window in seconds from
            the beginning of the clip, NaN past a clip's last window.
        window_mask (`torch.BoolTensor` of shape `(batch, max_windows)`): True where a window exists.
    """

    loss: torch.FloatTensor | None = None
    mos: torch.FloatTensor | None = None
    window_scores: torch.FloatTensor | None = None
    window_start_times: torch.FloatTensor | None = None
    window_mask: torch.BoolTensor | None = None


def plan_windows(num_samples: int, window_length: int, max_hop: int) -> list[int]:
    """
    Start samples of the analysis windows of a clip of `num_samples` samples, exactly as the original release:
    one window (zero-padded) for short input; otherwise windows spread evenly from the first to the last sample,
    at most `max_hop` samples apart.
    """
    overlength = max(num_samples - window_length, 0)
    num_windows = int(np.ceil(overlength / max_hop)) + 1
    # np.linspace and int() truncation reproduce the original's float64 arithmetic bit for bit.
    return [int(c * overlength) for c in np.linspace(0, 1, num_windows)]


class DistillMOSSpectrogram(nn.Module):
    """Peak-normalized waveform windows -> magnitude-compressed complex spectrogram (real and imaginary channels)."""

    def __init__(self, config: DistillMOSConfig):
        super().__init__()
        self.window_length = config.stft_window_length
        self.hop_length = config.stft_hop_length
        self.compression = config.magnitude_compression
        self.floor = config.magnitude_floor
        # Hann window and DFT basis per device and dtype, built once rather than per call (not buffers: never saved)
        self._constants: dict[tuple, torch.Tensor] = {}

    def hann_window(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """`(stft_window_length,)` periodic Hann window, cached per device and dtype."""
        window = self._constants.get(("hann", device, dtype))
        if window is None:
            window = torch.hann_window(self.window_length, device=device, dtype=dtype)
            self._constants[("hann", device, dtype)] = window
        return window

    def dft_basis(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """
        `(2 * frequency_bins, 1, stft_window_length)` Hann-windowed DFT basis (real parts, then imaginary parts), as
        convolution weights: the STFT as one strided `conv1d`, for exporters without complex numbers (ONNX).
        """
        key = ("dft", device, dtype)
        basis = self._constants.get(key)
        if basis is None:
            time = torch.arange(self.window_length, dtype=torch.float64)
            frequency = torch.arange(self.window_length // 2 + 1, dtype=torch.float64)
            angle = 2 * math.pi * frequency[:, None] * time[None, :] / self.window_length
            window = torch.hann_window(self.window_length, dtype=torch.float64)
            basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])[:, None, :]
            basis = basis.to(device, dtype)
            self._constants[key] = basis
        return basis

    def frames_seeing_audio(self, real_samples: int, window_samples: int) -> int:
        """
        How many leading frames of the spectrogram of a `window_samples`-sample window can differ from zero when only
        its first `real_samples` samples are audio and the rest is zero padding: frame t reads samples
        `[t * hop - pad, t * hop - pad + stft_window_length)`, so it sees audio iff `t * hop - pad < real_samples`.
        Every later frame is exactly zero (the FFT of zeros, times the magnitude's 0 / floor). All frames when the
        reflect padding at the window's end would mirror audio back in.
        """
        pad = (self.window_length - self.hop_length) // 2
        frames = (window_samples + 2 * pad - self.window_length) // self.hop_length + 1
        if real_samples >= window_samples - pad - 1:  # the end's reflect padding copies samples from here on
            return frames
        return min(frames, -(-(real_samples + pad) // self.hop_length))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """
        (num_windows, samples) -> (num_windows, 2, frequency_bins, frames), in the dtype of `windows`.

        The caller passes float32 whatever the model's dtype: FFTs in half precision are unsupported on CPU (MKL) and
        limited to power-of-two sizes on CUDA, and the compressed magnitude needs float32's range anyway.
        """
        pad = (self.window_length - self.hop_length) // 2
        padded = F.pad(windows, (pad, pad), mode="reflect")
        if torch.onnx.is_in_onnx_export():
            # (n, 2 * bins, frames) -> (n, 2, bins, frames): already channel-first, no complex tensors
            basis = self.dft_basis(windows.device, windows.dtype)
            spectrum = F.conv1d(padded[:, None, :], basis, stride=self.hop_length)
            spectrum = spectrum.view(spectrum.shape[0], 2, -1, spectrum.shape[-1])
            magnitude = torch.clamp(spectrum.pow(2).sum(dim=1, keepdim=True).sqrt(), min=self.floor)
            return magnitude**self.compression * spectrum / magnitude
        spectrum = torch.stft(
            padded,
            n_fft=self.window_length,
            hop_length=self.hop_length,
            win_length=self.window_length,
            window=self.hann_window(windows.device, windows.dtype),
            center=False,
            return_complex=True,
        )
        spectrum = torch.view_as_real(spectrum)
        magnitude = torch.clamp(spectrum.pow(2).sum(dim=-1, keepdim=True).sqrt(), min=self.floor)
        compressed = magnitude**self.compression * spectrum / magnitude
        return compressed.permute(0, 3, 1, 2)


class DistillMOSConvLayer(nn.Module):
    """3x3 convolution + LeakyReLU: (n, in_channels, frequency, frames) -> (n, conv_dim[i], frequency', frames')."""

    def __init__(self, config: DistillMOSConfig, layer_id: int):
        super().__init__()
        in_channels = 2 if layer_id == 0 else config.conv_dim[layer_id - 1]
        self.conv = nn.Conv2d(
            in_channels,
            config.conv_dim[layer_id],
            kernel_size=config.conv_kernel,
            stride=(config.conv_frequency_stride[layer_id], config.conv_time_stride[layer_id]),
            # time is padded so that only the strides shorten it; frequency is not padded
            padding=(0, config.conv_kernel // 2),
        )
        self.activation = nn.LeakyReLU(config.conv_leaky_relu_slope)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(hidden_states))


class DistillMOSFeatureEncoder(nn.Module):
    """
    Stack of 2-D convolutions over (frequency, time): (n, 2, 161, 768) -> (n, frames=384, features=1024).

    Padding is never computed: a window of a clip shorter than `window_length` ends in zero-padding, whose
    spectrogram frames are exactly zero, and over a run of equal input frames every 3-wide convolution (time padded
    by one zero frame at each end) + LeakyReLU outputs one constant column, layer after layer, except within the
    stack's receptive radius (`receptive_radius`, 6 frames here) of the audio's end or of the window's end. With
    `real_frames` given, the stack runs on the audio's frames plus `margin` zero frames after them and `margin` for
    the window's end, and the constant middle of the output is filled in: the same numbers as the full computation.
    """

    def __init__(self, config: DistillMOSConfig):
        super().__init__()
        self.conv_layers = nn.ModuleList(DistillMOSConvLayer(config, i) for i in range(len(config.conv_dim)))
        # Receptive radius in input frames: output frame j reads input frames [S j - radius, S j + radius], where S is
        # the product of the time strides (each layer adds its kernel's half-width times the strides before it).
        self.time_stride, self.receptive_radius = 1, 0
        for stride in config.conv_time_stride:
            self.receptive_radius += (config.conv_kernel // 2) * self.time_stride
            self.time_stride *= stride
        # Zero frames kept after the audio (>= radius + S: the last kept output frame then reads zeros only, away from
        # both ends, and is the constant column) and at the window's end (>= radius - S + 1: the kept frames before it
        # never read the shortened input's end); whole multiples of S, so the strides keep their phase.
        self.margin = _round_up(self.receptive_radius + self.time_stride, self.time_stride)
        # Frames computed are rounded up to this: fewer distinct shapes (oneDNN / cuDNN plan each shape once).
        self.granularity = _round_up(16, self.time_stride)

    def computed_frames(self, real_frames: int, total_frames: int) -> int:
        """Input frames the convolutions run on for a window whose first `real_frames` frames see audio."""
        if total_frames % self.time_stride:
            return total_frames
        kept = _round_up(real_frames + self.margin, self.granularity) + self.margin
        return total_frames if kept >= total_frames else kept

    def forward(self, spectrogram: torch.Tensor, real_frames: int | Sequence[int] | None = None) -> torch.Tensor:
        """
        Args:
            spectrogram (`torch.FloatTensor` of shape `(n, 2, frequency_bins, frames)`): compressed spectrogram.
            real_frames (`int` or one `int` per window, *optional*): leading frames that see audio (the rest are
                exactly zero, see [`DistillMOSSpectrogram.frames_seeing_audio`]); the batch is computed up to its
                largest. `None`: every frame is computed (and need not be zero).

        Returns:
            `torch.FloatTensor` of shape `(n, frames // time_stride, conv_output_size)`.
        """
        total_frames = spectrogram.shape[-1]
        kept = total_frames
        if real_frames is not None and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            real_frames = real_frames if isinstance(real_frames, int) else max(real_frames)
            kept = self.computed_frames(real_frames, total_frames)
        hidden_states = spectrogram[..., :kept]  # the frames beyond are zero: the same as the window's end ones
        if _use_channels_last(hidden_states):
            # oneDNN / cuDNN convolutions run natively on NHWC; on a 2-core CPU this is ~5-10% faster than NCHW.
            hidden_states = hidden_states.contiguous(memory_format=torch.channels_last)
        fused = _can_fuse_on_cpu(hidden_states)
        for layer in self.conv_layers:
            hidden_states = _fused_conv_leaky_relu(layer, hidden_states) if fused else layer(hidden_states)
        # (n, channels, frequency, frames) -> (n, frames, channels * frequency), channel-major as the original
        features = hidden_states.flatten(1, 2).transpose(1, 2)
        if kept == total_frames:
            return features
        # Output frames [0, head) are the window's, [head, end) its last `tail`; the ones between equal frame head - 1.
        head = (kept - self.margin) // self.time_stride
        missing = (total_frames - kept) // self.time_stride
        constant = features[:, head - 1 : head].expand(-1, missing, -1)
        return torch.cat([features[:, :head], constant, features[:, head:]], dim=1)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _use_channels_last(hidden_states: torch.Tensor) -> bool:
    """NHWC for the convolutions on CPU, and on GPU in half precision (tensor cores want NHWC)."""
    if hidden_states.device.type == "cpu":
        return True
    return hidden_states.dtype in (torch.float16, torch.bfloat16) or (
        hidden_states.device.type == "cuda" and torch.is_autocast_enabled("cuda")
    )


def _can_fuse_on_cpu(hidden_states: torch.Tensor) -> bool:
    """
    Whether oneDNN's fused convolution + LeakyReLU kernel can be used: CPU inference in eager mode, in float32, or in
    bfloat16 where oneDNN has a bfloat16 kernel for this CPU (AVX-512 or AVX-NE-CONVERT; it refuses others).
    """
    return (
        hidden_states.device.type == "cpu"
        and (
            hidden_states.dtype == torch.float32
            or (hidden_states.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        )
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())
    )


def _fused_conv_leaky_relu(layer: "DistillMOSConvLayer", hidden_states: torch.Tensor) -> torch.Tensor:
    """
    `layer(hidden_states)` in one oneDNN call: the LeakyReLU is applied as a post-op while the convolution's output is
    still in cache, instead of as a second pass over a tensor of up to 31 MB per window (the op PyTorch's own
    inductor uses for this fusion). Profile on 2 CPU cores: the separate LeakyReLU took ~8% of a window.
    """
    conv = layer.conv
    return torch.ops.mkldnn._convolution_pointwise(
        hidden_states, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
        "leaky_relu", [layer.activation.negative_slope], "",
    )


def sinusoidal_position_table(length: int, dim: int, base: float) -> torch.Tensor:
    """
    (length, dim) table of interleaved sines (even features) and cosines (odd features).

    Only initializes new models: a checkpoint carries its own table (`encoder.position_embeddings`), because sin and exp
    differ in the last bits from one CPU's maths library to another's, and scores must not depend on the CPU.
    """
    position = torch.arange(length).unsqueeze(1)
    inverse_frequency = torch.exp(torch.arange(0, dim, 2) * (-math.log(base) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * inverse_frequency)
    table[:, 1::2] = torch.cos(position * inverse_frequency)
    return table


class DistillMOSAttention(nn.Module):
    """Multi-head self-attention over all frames of a window (no masking: every window is full length)."""

    def __init__(self, config: DistillMOSConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(n, frames, hidden_size) -> (n, frames, hidden_size)."""
        batch, frames, _ = hidden_states.shape
        shape = (batch, frames, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, frames, -1))


class DistillMOSFeedForward(nn.Module):
    """Position-wise feed-forward block: (n, frames, hidden_size) -> (n, frames, hidden_size)."""

    def __init__(self, config: DistillMOSConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.activation(self.intermediate_dense(hidden_states)))


class DistillMOSEncoderLayer(nn.Module):
    """Post-norm transformer layer (as `torch.nn.TransformerEncoderLayer` with `norm_first=False`)."""

    def __init__(self, config: DistillMOSConfig):
        super().__init__()
        self.attention = DistillMOSAttention(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = DistillMOSFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.layer_norm(hidden_states + self.attention(hidden_states))
        return self.final_layer_norm(hidden_states + self.feed_forward(hidden_states))


class DistillMOSBatchNorm(nn.BatchNorm1d):
    """Batch norm over the feature axis of (n, frames, features) tensors."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.transpose(1, 2)).transpose(1, 2)


class DistillMOSEncoder(nn.Module):
    """(n, frames, 1024) CNN features -> (n, frames, hidden_size) contextual features."""

    def __init__(self, config: DistillMOSConfig):
        super().__init__()
        self.config = config
        # The original applies two batch norms in a row (one before and one inside its transformer wrapper).
        self.input_norm = DistillMOSBatchNorm(config.conv_output_size, eps=config.batch_norm_eps)
        self.projection_norm = DistillMOSBatchNorm(config.conv_output_size, eps=config.batch_norm_eps)
        self.projection = nn.Linear(config.conv_output_size, config.hidden_size)
        self.layers = nn.ModuleList(DistillMOSEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.output_norm = DistillMOSBatchNorm(config.hidden_size, eps=config.batch_norm_eps)
        # `(max_position_embeddings, hidden_size)` sinusoidal table, saved with the weights: the released checkpoint's
        # exact numbers, not recomputed (see `sinusoidal_position_table`).
        self.register_buffer(
            "position_embeddings",
            sinusoidal_position_table(
                config.max_position_embeddings, config.hidden_size, config.position_embedding_base
            ),
            persistent=True,
        )

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """
        `projection(projection_norm(input_norm(features)))`: (n, frames, conv_output_size) -> (n, frames, hidden_size).

        In eval mode both batch norms are per-feature affine maps, so they are folded into the projection's weight and
        bias (a 200 x 1024 product per call) instead of making two transposed passes over the features.
        """
        if self.training or self.input_norm.running_mean is None or self.projection_norm.running_mean is None:
            return self.projection(self.projection_norm(self.input_norm(features)))
        scale, shift = None, None
        for norm in (self.input_norm, self.projection_norm):  # x -> x * a + c, composed in float32 in any model dtype
            a = torch.rsqrt(norm.running_var.float() + norm.eps)
            c = -norm.running_mean.float() * a
            if norm.affine:
                a, c = a * norm.weight.float(), c * norm.weight.float() + norm.bias.float()
            scale, shift = (a, c) if scale is None else (scale * a, shift * a + c)
        projection = self.projection.weight.float()
        weight = projection * scale
        bias = self.projection.bias.float() + projection @ shift
        return F.linear(features, weight.to(features.dtype), bias.to(features.dtype))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(n, frames, conv_output_size) -> (n, frames, hidden_size)."""
        hidden_states = self.project(features)
        hidden_states = hidden_states + self.position_embeddings.to(hidden_states.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.output_norm(hidden_states)


class DistillMOSAttentionPooling(nn.Module):
    """Attention pooling over frames followed by a linear read-out: (n, frames, hidden) -> (n,) logits."""

    def __init__(self, config: DistillMOSConfig):
        super().__init__()
        self.attention_dense = nn.Linear(config.hidden_size, config.pooling_hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.attention_score = nn.Linear(config.pooling_hidden_size, 1)
        self.readout = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(n, frames, hidden_size) -> (n,) logits (before the sigmoid)."""
        weights = self.attention_score(self.activation(self.attention_dense(hidden_states)))  # (n, frames, 1)
        weights = torch.softmax(weights, dim=1)
        pooled = (weights.transpose(1, 2) @ hidden_states).squeeze(1)  # (n, hidden)
        return self.readout(pooled).squeeze(-1)


def _is_exporting_or_compiling() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


_TF32_LOCK = threading.Lock()
_TF32_USERS = 0
_TF32_SAVED: tuple[bool, bool] | None = None


@contextlib.contextmanager
def _tf32_off():
    """
    Exact float32 on CUDA: cuDNN runs float32 convolutions in TF32 by default (torch's `cudnn.allow_tf32 = True`),
    which moves scores by up to 8.8e-4 MOS (measured on an H200) against the original's 1e-4 parity. The flags are
    global, so threads scoring at once (a Space's concurrent requests) share one off period: the first to enter saves
    the caller's flags, the last to leave restores them.
    """
    global _TF32_USERS, _TF32_SAVED
    with _TF32_LOCK:
        if _TF32_USERS == 0:
            _TF32_SAVED = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        _TF32_USERS += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _TF32_USERS -= 1
            if _TF32_USERS == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = _TF32_SAVED


class DistillMOSPreTrainedModel(PreTrainedModel):
    config_class = DistillMOSConfig
    config: DistillMOSConfig
    base_model_prefix = "distillmos"
    main_input_name = "input_values"
    input_modalities = "audio"
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DistillMOSEncoder):  # a buffer, not a weight: only for checkpoints saved without it
            config = module.config
            table = sinusoidal_position_table(
                config.max_position_embeddings, config.hidden_size, config.position_embedding_base
            )
            module.position_embeddings.copy_(table.to(module.position_embeddings.dtype))


class DistillMOSModel(DistillMOSPreTrainedModel):
    """
    Distill-MOS: predicts the mean opinion score (1..5) of 16 kHz mono speech.

    Input of any length is cut into windows inside the model, on the model's device, exactly as the original release
    does; windows go through the network `window_batch_size` at a time, so memory stays bounded on hour-long audio.
    """

    def __init__(self, config: DistillMOSConfig):
        super().__init__(config)
        self.spectrogram = DistillMOSSpectrogram(config)
        self.feature_encoder = DistillMOSFeatureEncoder(config)
        self.encoder = DistillMOSEncoder(config)
        self.pooling = DistillMOSAttentionPooling(config)
        # How a chunk of windows runs in inference: None runs it here, as one batch on every thread (the plain path).
        # `distill_mos.engine` sets a per-core executor on CPU: `executor(score_batch, windows, real_samples)` with
        # `score_batch` = `_score_window_batch`, and `executor.workers` windows per chunk.
        self.window_executor = None
        # CUDA float32: TF32 is ~3x faster on Ampere and newer GPUs but not exact (see `_tf32_off`); opt in with True.
        self.allow_tf32 = False
        self.post_init()

    def score_windows(
        self, windows: torch.Tensor, real_samples: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Network on whole windows.

        Args:
            windows (`torch.FloatTensor` of shape `(n, window_length)`): waveform windows at 16 kHz.
            real_samples (`int` per window, *optional*): how many leading samples of each window are audio; the rest
                must be zeros (a short clip's padding). With `config.skip_padded_frames`, the convolutions then skip
                the padding's frames (the same scores: see [`DistillMOSFeatureEncoder`]). `None`: all computed.

        Returns:
            `torch.FloatTensor` of shape `(n,)`: normalized quality in 0..1 (sigmoid output) of each window.
        """
        if real_samples is not None:
            real_samples = [int(n) for n in real_samples]
            if len(real_samples) != windows.shape[0]:
                raise ValueError(f"real_samples has {len(real_samples)} entries for {windows.shape[0]} windows.")
        if self.window_executor is None or torch.is_grad_enabled() or _is_exporting_or_compiling():
            return self._score_window_batch(windows, real_samples)
        return self.window_executor(self._score_window_batch, windows, real_samples)

    def _score_window_batch(self, windows: torch.Tensor, real_samples: list[int] | None = None) -> torch.Tensor:
        """
        (n, window_length) -> (n,) float32 sigmoid outputs, in the calling thread. Peak normalization and the
        spectrogram run in float32; the convolutions, transformer and pooling in the model's dtype. `real_samples`:
        as in [`~DistillMOSModel.score_windows`].
        """
        windows = windows.float()
        peak = windows.abs().amax(dim=1, keepdim=True)
        windows = windows / (peak + self.config.normalization_eps)
        spectrogram = self.spectrogram(windows)
        real_frames = None
        if real_samples is not None and self.config.skip_padded_frames:
            real_frames = max(self.spectrogram.frames_seeing_audio(n, windows.shape[1]) for n in real_samples)
        autocast = torch.is_autocast_enabled(spectrogram.device.type)
        if not autocast:  # autocast picks each op's dtype itself
            spectrogram = spectrogram.to(self.dtype)
        exact = spectrogram.device.type == "cuda" and spectrogram.dtype == torch.float32 and not self.allow_tf32
        with _tf32_off() if exact and not autocast else contextlib.nullcontext():
            return self._network(spectrogram, real_frames)

    def _network(self, spectrogram: torch.Tensor, real_frames: int | None = None) -> torch.Tensor:
        """(n, 2, frequency_bins, frames) spectrogram -> (n,) float32 sigmoid outputs."""
        try:
            features = self.feature_encoder(spectrogram, real_frames)
        except RuntimeError as error:
            if "primitive" not in str(error) and "cpu support" not in str(error):
                raise
            # oneDNN has no kernel for this dtype on this CPU: say what to do instead of its internal message
            raise ValueError(
                f"this CPU cannot run the convolutions in {spectrogram.dtype} ({error}); load the model with "
                "dtype=torch.float32 (or dtype='auto' in DistillMOSScorer / --dtype auto, which picks what the CPU has)."
            ) from None
        return torch.sigmoid(self.pooling(self.encoder(features)).float())

    def _window_batch_size(self, device: torch.device) -> int:
        if self.config.window_batch_size is not None:
            return self.config.window_batch_size
        if device.type == "cpu":
            # One window per core at a time: larger batches per core only spill the caches (per-window time rises
            # with the batch size on CPU); an executor spreads a chunk's windows over its workers.
            return getattr(self.window_executor, "workers", 1)
        return 64

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        window_batch_size: int | None = None,
        max_window_hop: int | None = None,
        window_scorer: Callable[[torch.Tensor], torch.Tensor] | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DistillMOSOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, samples)`): mono waveforms at `config.sampling_rate`
                (16 kHz), right-padded to a common length. Use [`DistillMOSFeatureExtractor`] to prepare them. Any
                float dtype (float64 is cast to float32 window by window); a numpy array is accepted too.
            attention_mask (`torch.LongTensor` of shape `(batch, samples)`, *optional*): 1 for real samples, 0 for
                padding. With it, each clip of a padded batch gets exactly the score it gets alone. Tensor or numpy.
            labels (`torch.FloatTensor` of shape `(batch,)`, *optional*): human MOS; gives an MSE `loss`.
            window_batch_size (`int`, *optional*): windows per network call; overrides `config.window_batch_size`.
            max_window_hop (`int`, *optional*): largest spacing of windows in samples; overrides
                `config.max_window_hop` (larger is faster on long audio but departs from the original's scores).
            window_scorer (`Callable`, *optional*): replaces [`~DistillMOSModel.score_windows`], e.g. by an exported
                ONNX network, while windowing and aggregation stay here. It is called with the windows alone,
                `(n, window_length) -> (n,)`, in plan order, and computes every frame (padding included).

        Returns:
            [`DistillMOSOutput`]: `mos` of shape `(batch,)` plus per-window scores and start times in seconds.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        # numpy input (a feature extractor called with return_tensors="np") is taken as it is, without a copy
        if isinstance(input_values, np.ndarray):
            input_values = torch.from_numpy(input_values).to(self.device)
        if isinstance(attention_mask, np.ndarray):  # only read for the clips' lengths: any device will do
            attention_mask = torch.from_numpy(attention_mask)
        lengths = self._validate(input_values, attention_mask)
        self._check_dtype_runs_here(input_values.device)
        window_length = self.config.window_length

        def window(clip: int, start: int) -> torch.Tensor:
            # Cut from the clip's own samples only, so padding never leaks in; short clips are zero-padded to one
            # window. No clip-sized temporaries: an hour of audio costs its input tensor and one chunk of windows.
            samples = input_values[clip, start : min(start + window_length, lengths[clip])]
            return F.pad(samples, (0, window_length - samples.shape[0]))

        hop = max_window_hop or self.config.max_window_hop
        starts = [plan_windows(n, window_length, hop) for n in lengths]
        plan = [(clip, start) for clip, clip_starts in enumerate(starts) for start in clip_starts]
        real_samples = [min(start + window_length, lengths[clip]) - start for clip, start in plan]
        order = list(range(len(plan)))
        if window_scorer is None and self.config.skip_padded_frames:
            # Longest first, so that a chunk of windows computes about as many frames as each of its windows needs
            # (a chunk runs up to its longest window's audio); stable, so full windows keep their order.
            order.sort(key=lambda index: -real_samples[index])
        chunk = window_batch_size or self._window_batch_size(input_values.device)
        # Filled chunk by chunk, allocated once: a small tensor kept per chunk would sit in the allocator's heap among
        # the chunk's freed temporaries, so that the next chunk's no longer fit there and the heap grew by about a
        # window's size per chunk (hundreds of MB over hours of audio). Float32, whatever precision scored the windows.
        normalized = torch.empty(len(plan), dtype=torch.float32, device=input_values.device)
        for first in range(0, len(order), chunk):
            indices = order[first : first + chunk]
            # float32 windows whatever the input's dtype (float64 input is cast here, one chunk at a time)
            windows = torch.stack([window(*plan[i]) for i in indices]).float()
            if window_scorer is not None:
                scores = window_scorer(windows)
            else:
                scores = self.score_windows(windows, [real_samples[i] for i in indices])
            normalized[first : first + len(indices)] = scores
        if order != sorted(order):  # back to plan order
            normalized = normalized[torch.tensor(order, device=normalized.device).argsort()]

        batch, max_windows = len(starts), max(len(s) for s in starts)
        counts = torch.tensor([len(s) for s in starts], device=normalized.device)
        window_mask = torch.arange(max_windows, device=normalized.device)[None, :] < counts[:, None]
        per_window = normalized.new_full((batch, max_windows), float("nan"))
        per_window[window_mask] = normalized
        # As the original: the mean is taken over the sigmoid outputs, then mapped to the MOS range.
        mean = torch.where(window_mask, per_window, 0.0).sum(dim=1) / counts  # a NaN window score stays visible
        scale = self.config.mos_max - self.config.mos_min
        mos = self.config.mos_min + scale * mean
        window_scores = self.config.mos_min + scale * per_window
        start_times = torch.full((batch, max_windows), float("nan"), dtype=mos.dtype, device=mos.device)
        start_times[window_mask] = torch.tensor(
            [s / self.config.sampling_rate for _, s in plan], dtype=mos.dtype, device=mos.device
        )

        loss = None
        if labels is not None:
            loss = F.mse_loss(mos, labels.to(mos.dtype).view(-1))
        output = DistillMOSOutput(
            loss=loss, mos=mos, window_scores=window_scores, window_start_times=start_times, window_mask=window_mask
        )
        return output if return_dict else output.to_tuple()

    def _check_dtype_runs_here(self, device: torch.device) -> None:
        """Raises a ValueError, with what to use instead, for a model dtype that cannot run on `device`."""
        dtype = self.dtype
        if dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            raise ValueError(
                f"Distill-MOS runs in float32, bfloat16, float16 or float64, not {dtype}; load it with dtype=torch.float32."
            )
        if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ValueError(
                f"{torch.cuda.get_device_name(device)} has no bfloat16 support; load the model with dtype=torch.float16 "
                "(tensor cores) or torch.float32."
            )

    @staticmethod
    def _validate(input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> list[int]:
        """Checks the inputs and returns each clip's length in samples."""
        if not isinstance(input_values, torch.Tensor) or input_values.dim() != 2:
            shape = tuple(input_values.shape) if isinstance(input_values, torch.Tensor) else type(input_values).__name__
            raise ValueError(
                f"input_values must be a float tensor of shape (batch, samples), got {shape}. "
                "Prepare audio with DistillMOSFeatureExtractor(..., return_tensors='pt')."
            )
        if not input_values.is_floating_point():
            raise ValueError(f"input_values must be floating point, got {input_values.dtype}.")
        if input_values.shape[0] == 0 or input_values.shape[1] == 0:
            raise ValueError(f"input_values is empty (shape {tuple(input_values.shape)}): there is no audio to score.")
        # checked a million samples at a time: a whole-clip boolean temporary costs ~380 MB per hour of audio
        if not all(bool(torch.isfinite(part).all()) for part in input_values.split(1 << 20, dim=1)):
            raise ValueError("input_values contains NaN or infinite samples; the score would be meaningless.")
        if attention_mask is None:
            return [input_values.shape[1]] * input_values.shape[0]
        if attention_mask.shape != input_values.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_values has shape "
                f"{tuple(input_values.shape)}; they must match (one mask value per sample)."
            )
        lengths = []
        for row, mask in enumerate(attention_mask):  # row by row: no clip-sized int64 temporaries on long audio
            length = int(mask.count_nonzero())
            if not bool((mask[:length] == 1).all()) or bool(mask[length:].any()):
                raise ValueError(
                    f"attention_mask row {row} is not one run of 1s followed by 0s: only 0 (padding) and 1 (audio) "
                    "are allowed, with the padding on the right (no gaps, no left padding)."
                )
            if length == 0:
                raise ValueError(f"attention_mask marks clip {row} as empty: there is no audio to score.")
            lengths.append(length)
        return lengths


__all__ = ["DistillMOSModel", "DistillMOSPreTrainedModel", "DistillMOSOutput", "plan_windows"]
