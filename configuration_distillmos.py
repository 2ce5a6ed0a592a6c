# Copyright (c) Microsoft Corporation (original Distill-MOS architecture and weights, MIT licence).
# Copyright the Distill-MOS for Hugging Face contributors (this port, MIT licence).
"""Distill-MOS model configuration."""

from transformers import PretrainedConfig


class DistillMOSConfig(PretrainedConfig):
    r"""
    Configuration of a [`DistillMOSModel`], the compact speech-quality estimator of Stahl and Gamper,
    "Distillation and Pruning for Scalable Self-Supervised Representation-Based Speech Quality Assessment"
    (ICASSP 2025, arXiv 2502.05356). The defaults reproduce the released checkpoint `distill_mos_v7.pt`
    (PyPI `distillmos` 0.9.1).

    The network scores fixed windows of `window_length` samples: a compressed complex spectrogram goes through a
    stack of 3x3 convolutions, a linear projection, a post-norm transformer encoder and attention pooling, giving one
    score per window. Longer input is cut into windows spaced at most `max_window_hop` samples apart and the clip's
    score is the mean of its windows' scores; shorter input is zero-padded to one window.

    Args:
        sampling_rate (`int`, defaults to 16000): sampling rate of the input waveform, in Hz.
        window_length (`int`, defaults to 122880): samples per analysis window (7.68 s).
        max_window_hop (`int`, defaults to 16000): largest spacing, in samples, between the starts of consecutive
            windows of long input (1 s). Windows are spread evenly from the start to the end of the clip. Larger
            values trade exactness for speed on long audio (fewer windows); the released model used 16000.
        window_batch_size (`int`, *optional*): how many windows go through the network at once. Bounds memory on long
            audio. `None` picks a device-dependent default (small on CPU, where larger batches are not faster;
            large on GPU).
        normalization_eps (`float`, defaults to 1e-8): added to each window's peak amplitude before peak normalization.
        stft_window_length (`int`, defaults to 320): Hann window and FFT size of the spectrogram, in samples (20 ms).
        stft_hop_length (`int`, defaults to 160): spectrogram hop, in samples (10 ms).
        magnitude_compression (`float`, defaults to 0.3): exponent applied to the spectrogram magnitude; the phase is
            kept.
        magnitude_floor (`float`, defaults to 1e-12): floor of the magnitude before compression, avoiding 0 / 0.
        conv_dim (`list[int]`): output channels of each convolution layer.
        conv_kernel (`int`, defaults to 3): square kernel size of every convolution layer.
        conv_frequency_stride (`list[int]`): frequency stride of each convolution layer.
        conv_time_stride (`list[int]`): time stride of each convolution layer.
        conv_leaky_relu_slope (`float`, defaults to 0.1): negative slope of the LeakyReLU after each convolution.
        hidden_size (`int`, defaults to 200): width of the transformer encoder.
        num_hidden_layers (`int`, defaults to 7): number of transformer encoder layers.
        num_attention_heads (`int`, defaults to 8): attention heads per layer.
        intermediate_size (`int`, defaults to 400): width of the feed-forward block.
        hidden_act (`str`, defaults to `"relu"`): activation of the feed-forward block and of the pooling MLP.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the encoder's layer norms.
        batch_norm_eps (`float`, defaults to 1e-5): epsilon of the batch norms.
        max_position_embeddings (`int`, defaults to 384): frames per window after the convolutions, the length of the
            sinusoidal position table.
        position_embedding_base (`float`, defaults to 768.0): base of the sinusoidal position table's frequencies
            (the original uses twice the table length rather than the usual 10000).
        pooling_hidden_size (`int`, defaults to 400): hidden width of the attention-pooling MLP.
        mos_min (`float`, defaults to 1.0): score for a sigmoid output of 0.
        mos_max (`float`, defaults to 5.0): score for a sigmoid output of 1.
        skip_padded_frames (`bool`, defaults to `True`): whether the convolutions skip the zero-padding of a window
            of a clip shorter than `window_length`. Exact: the padding's spectrogram frames are zero, so each
            convolution's output over them is one constant column apart from a border of the stack's receptive field
            (6 frames) after the audio and at the window's end; the convolutions run on the audio's frames plus
            those borders and the constant columns are filled in (scores within 1e-6 of the full computation). Up
            to 5x less convolution work on a 1 s clip. `False` computes every frame (for checking). A
            `window_scorer` (the ONNX backend) always computes every frame.
    """

    model_type = "distillmos"

    def __init__(
        self,
        sampling_rate: int = 16000,
        window_length: int = 122880,
        max_window_hop: int = 16000,
        window_batch_size: int | None = None,
        normalization_eps: float = 1e-8,
        stft_window_length: int = 320,
        stft_hop_length: int = 160,
        magnitude_compression: float = 0.3,
        magnitude_floor: float = 1e-12,
        conv_dim: list[int] = (64, 64, 128, 256, 256, 256),
        conv_kernel: int = 3,
        conv_frequency_stride: list[int] = (1, 2, 2, 2, 2, 2),
        conv_time_stride: list[int] = (1, 1, 1, 1, 1, 2),
        conv_leaky_relu_slope: float = 0.1,
        hidden_size: int = 200,
        num_hidden_layers: int = 7,
        num_attention_heads: int = 8,
        intermediate_size: int = 400,
        hidden_act: str = "relu",
        layer_norm_eps: float = 1e-5,
        batch_norm_eps: float = 1e-5,
        max_position_embeddings: int = 384,
        position_embedding_base: float = 768.0,
        pooling_hidden_size: int = 400,
        mos_min: float = 1.0,
        mos_max: float = 5.0,
        skip_padded_frames: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sampling_rate = sampling_rate
        self.window_length = window_length
        self.max_window_hop = max_window_hop
        self.window_batch_size = window_batch_size
        self.normalization_eps = normalization_eps
        self.stft_window_length = stft_window_length
        self.stft_hop_length = stft_hop_length
        self.magnitude_compression = magnitude_compression
        self.magnitude_floor = magnitude_floor
        self.conv_dim = list(conv_dim)
        self.conv_kernel = conv_kernel
        self.conv_frequency_stride = list(conv_frequency_stride)
        self.conv_time_stride = list(conv_time_stride)
        self.conv_leaky_relu_slope = conv_leaky_relu_slope
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.batch_norm_eps = batch_norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding_base = position_embedding_base
        self.pooling_hidden_size = pooling_hidden_size
        self.mos_min = mos_min
        self.mos_max = mos_max
        self.skip_padded_frames = skip_padded_frames

        if not (len(self.conv_dim) == len(self.conv_frequency_stride) == len(self.conv_time_stride)):
            raise ValueError(
                "conv_dim, conv_frequency_stride and conv_time_stride must have one entry per convolution layer, got "
                f"{len(self.conv_dim)}, {len(self.conv_frequency_stride)} and {len(self.conv_time_stride)}."
            )
        if hidden_size % num_attention_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads}).")
        if max_window_hop <= 0 or window_length <= 0:
            raise ValueError("window_length and max_window_hop must be positive numbers of samples.")

    @property
    def num_frequency_bins(self) -> int:
        """Frequency bins of the spectrogram (one-sided FFT)."""
        return self.stft_window_length // 2 + 1

    @property
    def conv_output_frequency_bins(self) -> int:
        """Frequency bins left after the convolutions (no frequency padding)."""
        bins = self.num_frequency_bins
        for stride in self.conv_frequency_stride:
            bins = (bins - self.conv_kernel) // stride + 1
        return bins

    @property
    def conv_output_size(self) -> int:
        """Features per frame fed to the projection: channels x frequency bins of the last convolution."""
        return self.conv_dim[-1] * self.conv_output_frequency_bins

    @property
    def window_seconds(self) -> float:
        return self.window_length / self.sampling_rate


__all__ = ["DistillMOSConfig"]
