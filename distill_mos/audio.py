"""Decoding audio files to mono float32 waveforms: the one decode path of the CLI, the API, the Space and eval."""

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# libsndfile reads these bit-exactly and fast; everything else (mp3, m4a, aac, webm, ...) goes through FFmpeg.
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64", ".rf64"}
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | {".mp3", ".m4a", ".aac", ".opus", ".webm", ".mp4", ".wma"}


class AudioFileError(ValueError):
    """A file that cannot be scored. `str(error)` is `"<path>: <reason>"`."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class DecodedAudio:
    """A decoded file: `waveform` is the selected channel(s) mixed to mono, float32, shape (samples,)."""

    waveform: np.ndarray
    sampling_rate: int
    channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.waveform.shape[0] / self.sampling_rate


def select_channel(samples: np.ndarray, channel: str | int = "first") -> np.ndarray:
    """
    (channels, samples) -> (samples,). `channel` is "first" (the original tool's choice), "mean" (average of all
    channels) or a 0-based channel index.
    """
    if channel == "first":
        return samples[0]
    if channel == "mean":
        return samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0]
    index = int(channel)
    if not 0 <= index < samples.shape[0]:
        raise ValueError(f"channel {index} requested but the audio has {samples.shape[0]} channel(s)")
    return samples[index]


def _decode_soundfile(source: Path | io.BytesIO) -> tuple[np.ndarray, int]:
    import soundfile

    data, sampling_rate = soundfile.read(source if isinstance(source, io.BytesIO) else str(source), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(sampling_rate)


def _decode_ffmpeg(source: Path | io.BytesIO) -> tuple[np.ndarray, int]:
    from torchcodec.decoders import AudioDecoder

    samples = AudioDecoder(source.getvalue() if isinstance(source, io.BytesIO) else str(source)).get_all_samples()
    return samples.data.numpy(), int(samples.sample_rate)


def _first_line(error: Exception) -> str:
    text = re.sub(r"\S+\.(?:cpp|h|c):\d+,?\s*", "", str(error)).strip()  # drop decoders' source locations
    text = re.sub(r"^\w+Decoder,\s*", "", text)
    return text.splitlines()[0] if text else type(error).__name__


def load_audio(path: str | Path, channel: str | int = "first") -> DecodedAudio:
    """
    Decodes an audio file (wav, flac, ogg, mp3, m4a, ...; any sample rate; any number of channels).

    Raises:
        AudioFileError: the file is missing, empty, not audio, or holds no samples; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise AudioFileError(path, "no such file")
    if path.is_dir():
        raise AudioFileError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioFileError(path, "file is empty (0 bytes)")

    return _decode(path, path, channel, soundfile_first=path.suffix.lower() in SOUNDFILE_SUFFIXES)


def decode_bytes(data: bytes, name: str = "audio bytes", channel: str | int = "first") -> DecodedAudio:
    """Like `load_audio`, for an encoded file held in memory (e.g. an undecoded 🤗 datasets `Audio` value)."""
    if not data:
        raise AudioFileError(name, "file is empty (0 bytes)")
    suffix = Path(name).suffix.lower()
    return _decode(io.BytesIO(data), name, channel, soundfile_first=suffix in SOUNDFILE_SUFFIXES or not suffix)


def _decode(source: Path | io.BytesIO, name, channel: str | int, soundfile_first: bool) -> DecodedAudio:
    decoders = [_decode_soundfile, _decode_ffmpeg] if soundfile_first else [_decode_ffmpeg, _decode_soundfile]
    failures = []
    for decode in decoders:
        try:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            samples, sampling_rate = decode(source)
            break
        except Exception as error:  # noqa: BLE001 - each decoder has its own exception types
            failures.append(_first_line(error))
    else:
        raise AudioFileError(name, f"not a readable audio file ({failures[0]})")

    if samples.ndim != 2 or samples.shape[1] == 0:
        raise AudioFileError(name, "contains no audio samples")
    try:
        waveform = select_channel(samples, channel)
    except ValueError as error:
        raise AudioFileError(name, str(error)) from None
    return DecodedAudio(np.ascontiguousarray(waveform, dtype=np.float32), sampling_rate, samples.shape[0])
