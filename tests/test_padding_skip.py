"""
Padding is never computed (issue 17): a short clip's window ends in zero padding, whose spectrogram frames are exactly
zero; the convolutions run on the audio's frames plus a receptive-field border and fill in the constant columns.
Checked against the full computation (`config.skip_padded_frames = False`) and against the original distillmos.
"""

import contextlib

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import GENSPEECH, ROOT

import modeling_distillmos
from configuration_distillmos import DistillMOSConfig
from modeling_distillmos import DistillMOSFeatureEncoder

SR, WINDOW = 16000, 122880
LENGTHS_S = [0.05, 1, 2, 3, 4, 7.0, 7.679, 7.68, 7.681]
# float32, the same computation on fewer frames: features measured bit-identical alone, scores within 2.4e-7 in a
# padded batch (kernels blocked for another width; the projection reads contiguous instead of strided features).
EXACT = 1e-6


def speech(seconds: float, offset: int = 0) -> np.ndarray:
    """Real speech: the bundled GenSpeech clips end to end, from `offset`, cut to length."""
    clips = [sf.read(p, dtype="float32")[0] for p in sorted(GENSPEECH.glob("audio/**/*.wav"))]
    joined = np.roll(np.concatenate(clips), -offset)
    return np.resize(joined, int(round(seconds * SR))).astype(np.float32)


@contextlib.contextmanager
def settings(model, skip: bool, window_threads: bool = True):
    saved = model.config.skip_padded_frames, model.cpu_window_threads
    model.config.skip_padded_frames, model.cpu_window_threads = skip, window_threads
    try:
        yield model
    finally:
        model.config.skip_padded_frames, model.cpu_window_threads = saved


@contextlib.contextmanager
def conv_input_widths(model):
    """Records the time width (frames) of every input the first convolution layer sees."""
    widths = []
    layer = model.feature_encoder.conv_layers[0]
    real = modeling_distillmos._fused_conv_leaky_relu

    def fused(conv_layer, hidden_states):
        if conv_layer is layer:
            widths.append(hidden_states.shape[-1])
        return real(conv_layer, hidden_states)

    hook = layer.register_forward_pre_hook(lambda module, args: widths.append(args[0].shape[-1]))
    modeling_distillmos._fused_conv_leaky_relu = fused
    try:
        yield widths
    finally:
        modeling_distillmos._fused_conv_leaky_relu = real
        hook.remove()


@contextlib.contextmanager
def unfused():
    real = modeling_distillmos._can_fuse_on_cpu
    modeling_distillmos._can_fuse_on_cpu = lambda hidden_states: False
    try:
        yield
    finally:
        modeling_distillmos._can_fuse_on_cpu = real


def padded_batch(feature_extractor, seconds: list[float]):
    clips = [speech(s, offset=i * 37_337) for i, s in enumerate(seconds)]
    return feature_extractor(clips, sampling_rate=SR, return_tensors="pt", padding=True, return_attention_mask=True)


def full_and_skipped(model, inputs) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(MOS computing every frame, MOS with padding skipped, first-layer input widths of the skipped run)."""
    with torch.inference_mode():
        with settings(model, skip=False):
            full = model(**inputs).mos
        with settings(model, skip=True), conv_input_widths(model) as widths:
            skip = model(**inputs).mos
    return full, skip, widths


# --- the argument, on every length -------------------------------------------------------------------------------


def test_frames_past_the_audio_are_exactly_zero(model):
    """What the skip relies on: frames past `frames_seeing_audio` are 0 after peak normalization and the last one
    kept is not (white noise), around frame edges and the end's reflect padding."""
    generator = np.random.default_rng(0)
    lengths = [1, 79, 80, 81, 159, 160, 161, 16000, 16079, 16080, 16081, WINDOW - 241, WINDOW - 240, WINDOW - 161,
               WINDOW - 160, WINDOW - 82, WINDOW - 81, WINDOW - 80, WINDOW - 1, WINDOW]
    windows = torch.zeros(len(lengths), WINDOW)
    for row, length in enumerate(lengths):
        windows[row, :length] = torch.from_numpy(generator.standard_normal(length).astype(np.float32))
    with torch.inference_mode():
        spectrogram = model.spectrogram(windows / (windows.abs().amax(dim=1, keepdim=True) + 1e-8))
    for row, length in enumerate(lengths):
        frames = model.spectrogram.frames_seeing_audio(length, WINDOW)
        assert bool((spectrogram[row, ..., frames:] == 0).all()), length
        # tight: the last frame kept sees audio, unless its one audio sample meets the Hann window's zero first tap
        only_at_zero_tap = (frames - 1) * 160 - 80 == length - 1
        assert bool((spectrogram[row, ..., frames - 1] != 0).any()) or only_at_zero_tap, length


@pytest.mark.parametrize("time_strides", [[1, 1, 1, 1, 1, 2], [2, 1, 1, 2, 1, 1]], ids=["released", "strides-2-2"])
def test_skip_equals_full_on_every_real_length_of_a_small_stack(time_strides):
    """
    The border argument for every number of real frames (0..768), on a narrow random stack with the released time
    strides and with strides that put the receptive radius at 15 frames, forward and (training) weight gradients.
    """
    config = DistillMOSConfig(conv_dim=[3, 4, 3, 4, 3, 2], conv_frequency_stride=[1] * 6, conv_time_stride=time_strides)
    torch.manual_seed(0)
    encoder = DistillMOSFeatureEncoder(config)
    spectrogram = torch.randn(1, 2, 13, 768)
    skipped_any = False
    # every length near the ends, and every residue modulo the strides (4) and the rounding (16) in between
    for real_frames in [*range(24), *range(24, 745, 29), *range(745, 769)]:
        data = spectrogram.clone()
        data[..., real_frames:] = 0
        with torch.no_grad():
            full, skip = encoder(data), encoder(data, real_frames)
        scale = float(full.abs().max())
        assert full.shape == skip.shape
        assert float((full - skip).abs().max()) <= 1e-6 * scale, real_frames
        skipped_any |= encoder.computed_frames(real_frames, 768) < 768
    assert skipped_any
    # training: the filled columns carry the gradient of all the columns they stand for
    data = spectrogram.clone()
    data[..., 100:] = 0
    weights = torch.randn_like(full)
    gradients = []
    for real_frames in (None, 100):
        encoder.zero_grad()
        (encoder(data, real_frames) * weights).sum().backward()
        gradients.append([p.grad.clone() for p in encoder.parameters()])
    for full, skip in zip(*gradients):
        assert float((full - skip).abs().max()) <= 1e-5 * float(full.abs().max())


# --- the released model on real speech --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(feature_extractor):
    return padded_batch(feature_extractor, LENGTHS_S)


@pytest.fixture(scope="module")
def full_output(model, batch):
    with settings(model, skip=False), torch.inference_mode():
        return model(**batch)


@pytest.mark.parametrize(
    "window_threads, window_batch_size",
    [(True, None), (False, 4)],
    ids=["one-window-per-core", "batches-of-mixed-lengths"],
)
def test_padded_batch_of_mixed_lengths_scores_as_the_full_computation(model, batch, full_output, window_threads,
                                                                        window_batch_size):
    with settings(model, skip=True, window_threads=window_threads), torch.inference_mode():
        output = model(**batch, window_batch_size=window_batch_size)
    assert torch.equal(output.window_mask, full_output.window_mask)
    assert torch.equal(output.window_start_times.nan_to_num(-1), full_output.window_start_times.nan_to_num(-1))
    window_delta = (output.window_scores - full_output.window_scores)[output.window_mask].abs().max()
    assert float((output.mos - full_output.mos).abs().max()) <= EXACT
    assert float(window_delta) <= EXACT


def test_unfused_convolutions_skip_exactly(model, feature_extractor):
    """The plain Conv2d + LeakyReLU path (taken with gradients on, or where oneDNN has no fused kernel)."""
    with unfused():
        full, skip, widths = full_and_skipped(model, padded_batch(feature_extractor, [1, 3, 7.679]))
    assert sorted(widths) == [120, 328, 768]  # the unfused layers ran, on the frames each window needs
    assert float((full - skip).abs().max()) <= EXACT


def test_features_equal_the_full_computation(model):
    """Directly on the feature encoder, the batch computed up to its longest window's audio."""
    lengths = [int(s * SR) for s in (0.05, 2, 4, 7.0)]
    windows = torch.zeros(len(lengths), WINDOW)
    for row, length in enumerate(lengths):
        windows[row, :length] = torch.from_numpy(speech(length / SR, offset=row * 9_001))
    with torch.inference_mode():
        spectrogram = model.spectrogram(windows / (windows.abs().amax(dim=1, keepdim=True) + 1e-8))
        real_frames = [model.spectrogram.frames_seeing_audio(n, WINDOW) for n in lengths]
        full = model.feature_encoder(spectrogram)
        skip = model.feature_encoder(spectrogram, real_frames)
        alone = model.feature_encoder(spectrogram[:1], real_frames[:1])
    assert float((full - skip).abs().max()) <= EXACT * float(full.abs().max())
    assert float((full[:1] - alone).abs().max()) <= EXACT * float(full.abs().max())


def test_bfloat16_skip_matches_bfloat16_full(feature_extractor):
    """
    bfloat16 against bfloat16 computing every frame. The same arithmetic, but oneDNN's bfloat16 kernels block and round
    differently for another width (and the projection reads contiguous instead of strided features), and each
    bfloat16 rounding is 2^-8 of an activation: the difference is bfloat16's own rounding noise, so the bound is
    that class's, 0.01 MOS (bfloat16 vs float32 measured 0.0091, test_dtype). Measured 9.7e-4 on an AMD EPYC
    (avx512_bf16); with a 2-frame border instead of 8 the skip moves these scores by 0.54 MOS (a border one stride
    short is caught by the small-stack test above)."""
    from modeling_distillmos import DistillMOSModel

    model = DistillMOSModel.from_pretrained(str(ROOT), dtype=torch.bfloat16).eval()
    full, skip, widths = full_and_skipped(model, padded_batch(feature_extractor, [1, 3, 7.0]))
    assert max(widths) < 768
    assert float((full - skip).abs().max()) <= 0.01


@pytest.mark.parametrize("seconds", [0.05, 1, 3, 7.679, 7.681])
def test_parity_with_the_original_on_short_clips(model, feature_extractor, original_model, seconds):
    waveform = speech(seconds, offset=int(seconds * 1000))
    with torch.no_grad():
        reference = original_model(torch.from_numpy(waveform)[None]).item()
    inputs = feature_extractor(waveform, sampling_rate=SR, return_tensors="pt")
    with settings(model, skip=True), torch.inference_mode():
        ours = model(**inputs).mos.item()
    assert abs(ours - reference) <= 1e-4, (seconds, ours, reference)


# --- the skip really happens ------------------------------------------------------------------------------------


def test_convolutions_see_only_the_audio_and_a_border(model, feature_extractor):
    """A 1 s clip: 101 frames see audio; the first convolution gets them plus its borders, not 768 frames."""
    inputs = feature_extractor(speech(1.0), sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        with settings(model, skip=True), conv_input_widths(model) as skipped:
            model(**inputs)
        with settings(model, skip=False), conv_input_widths(model) as full:
            model(**inputs)
    assert skipped == [model.feature_encoder.computed_frames(101, 768)] and skipped[0] <= 101 + 3 * 16
    assert full == [768]


def test_windows_are_bucketed_by_length_and_scores_come_back_in_order(model, feature_extractor):
    """Clips of 1, 7, 1, 7 s in chunks of 2: chunks (7, 7) and (1, 1), not two chunks computing 7 s each."""
    seconds = [1, 7, 1, 7]
    inputs = padded_batch(feature_extractor, seconds)
    with settings(model, skip=True, window_threads=False), torch.inference_mode():
        with conv_input_widths(model) as widths:
            together = model(**inputs, window_batch_size=2).mos
        alone = [model(inputs.input_values[i : i + 1, : int(s * SR)]).mos.item() for i, s in enumerate(seconds)]
    encoder = model.feature_encoder
    assert widths == [encoder.computed_frames(701, 768), encoder.computed_frames(101, 768)]
    # each clip's score comes back at its own place (the four clips are different audio: scores differ)
    assert len(set(alone)) == 4
    assert np.abs(together.numpy() - np.array(alone)).max() <= 1e-5


def test_full_computation_stays_selectable_from_the_config(tmp_path):
    from modeling_distillmos import DistillMOSModel

    assert DistillMOSConfig().skip_padded_frames is True
    assert DistillMOSConfig.from_pretrained(str(ROOT)).skip_padded_frames is True
    config = DistillMOSConfig.from_pretrained(str(ROOT), skip_padded_frames=False)
    config.save_pretrained(tmp_path)
    assert DistillMOSConfig.from_pretrained(tmp_path).skip_padded_frames is False
    model = DistillMOSModel.from_pretrained(str(ROOT), config=config).eval()
    with conv_input_widths(model) as widths, torch.inference_mode():
        model(torch.from_numpy(speech(1.0))[None])
    assert widths == [768]


def test_window_scorer_keeps_its_one_argument_contract(model):
    """The ONNX backend's hook gets the windows alone, in plan order, and computes every frame itself."""
    calls = []

    def scorer(windows):
        calls.append(windows.shape[0])
        return torch.full((windows.shape[0],), 0.5)

    clips = torch.zeros(2, int(9 * SR))
    clips[0, : SR] = torch.from_numpy(speech(1.0))
    clips[1] = torch.from_numpy(speech(9.0))
    mask = torch.ones_like(clips, dtype=torch.long)
    mask[0, SR:] = 0
    with torch.inference_mode():
        output = model(clips, attention_mask=mask, window_scorer=scorer, window_batch_size=8)
    assert calls == [4] and float(output.mos[0]) == pytest.approx(3.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_skip_matches_full(feature_extractor, dtype):
    from modeling_distillmos import DistillMOSModel

    model = DistillMOSModel.from_pretrained(str(ROOT), dtype=dtype).eval().cuda()
    full, skip, widths = full_and_skipped(model, padded_batch(feature_extractor, LENGTHS_S).to("cuda"))
    assert min(widths) < 768
    assert float((full - skip).abs().max()) <= (EXACT if dtype == torch.float32 else 0.01)
