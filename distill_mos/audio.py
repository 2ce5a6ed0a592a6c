"""Decoding audio files to mono float32 waveforms: the one decode path of the CLI, the API, the Space and eval."""

import errno
import io
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# libsndfile reads these bit-exactly and fast; everything else (mp3, m4a, aac, webm, ...) goes through FFmpeg.
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64", ".rf64"}
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | {".mp3", ".m4a", ".aac", ".opus", ".webm", ".mp4", ".wma"}

# Warnings that travel with a score (CLI `warning` column, `FileScore.warning`, the Space). One wording everywhere:
# the Space and the CLI format these templates, so a user sees the same sentence in both.
SHORT_CLIP_SECONDS = 1.0
WINDOW_SECONDS = 7.68  # the model's analysis window (DistillMOSConfig.window_seconds); kept here to stay torch-free
SILENT_WARNING = "audio is silent (all samples are zero); its score is finite but says nothing about speech."
SHORT_CLIP_WARNING = (
    "audio is very short ({duration:.2f} s); the model scores {window:g} s windows, so this score is less reliable"
)
TRUNCATED_WARNING = (
    "audio is much shorter than its header says ({duration:.2f} s decoded, {declared:.2f} s declared); "
    "the file is probably truncated, so this score covers only what could be read"
)
# A decoded length under this fraction of the header's (and at least TRUNCATED_MIN_SECONDS short of it) is "far
# shorter". Headers that only estimate (MP3 without a Xing/VBRI frame) get the looser ESTIMATE fraction.
TRUNCATED_FRACTION, TRUNCATED_ESTIMATE_FRACTION, TRUNCATED_MIN_SECONDS = 0.9, 0.5, 0.25
# libsndfile reports this many frames (SF_COUNT_MAX) when a header does not say (FLAC written to a pipe).
_UNKNOWN_FRAMES = 2**62


def short_clip_warning(duration: float, window_seconds: float = WINDOW_SECONDS) -> str:
    """`SHORT_CLIP_WARNING` for a clip of `duration` seconds."""
    return SHORT_CLIP_WARNING.format(duration=duration, window=window_seconds)


def truncated_warning(duration: float, declared: float) -> str:
    """`TRUNCATED_WARNING` for `duration` seconds decoded out of `declared` seconds announced by the header."""
    return TRUNCATED_WARNING.format(duration=duration, declared=declared)


class AudioFileError(ValueError):
    """A file that cannot be scored. `str(error)` is `"<path>: <reason>"`."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class DecodedAudio:
    """
    A decoded file: `waveform` is the selected channel(s) mixed to mono, float32, shape (samples,).
    `declared_duration` is the length in seconds the file's header announces (None when it does not say: a FLAC
    written to a pipe, a WAV with a streaming header, most FFmpeg containers), and `warning` says what makes the
    score less trustworthy (very short, or far shorter than the header says), else None.
    """

    waveform: np.ndarray
    sampling_rate: int
    channels: int
    declared_duration: float | None = None
    warning: str | None = None

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


# How `load_audio(max_seconds=...)` begins its refusal, for callers that word it their own way (the Space).
TOO_LONG_PREFIX = "audio is longer than"


class _TooLong(Exception):
    """The audio runs past `max_seconds`: a verdict on the file, not a decoder failure to retry with another one."""

    def __init__(self, max_seconds: float):
        super().__init__(f"{TOO_LONG_PREFIX} {max_seconds:g} s, the limit here")


def _decode_soundfile(
    source: Path | io.BytesIO, max_seconds: float | None = None
) -> tuple[np.ndarray, int, float | None, bool]:
    """-> (samples (channels, frames) float32, rate, header duration in s or None, header is exact)."""
    import soundfile

    with soundfile.SoundFile(source if isinstance(source, io.BytesIO) else str(source)) as handle:
        rate = int(handle.samplerate)
        limit = None if max_seconds is None or rate <= 0 else int(max_seconds * rate)
        if 0 < handle.frames < _UNKNOWN_FRAMES:
            declared = handle.frames / rate if rate > 0 else None
            if limit is not None and handle.frames > limit:
                raise _TooLong(max_seconds)
            data = handle.read(dtype="float32", always_2d=True)
        else:
            # The header does not say how long the audio is (libsndfile then reports 2**63 - 1 frames, "5.8e14 s"):
            # measure the length by reading blocks until the stream ends, or until it passes the limit (a few KB of
            # FLAC can hold hours of silence: the limit must hold before the samples are in memory).
            declared = None
            blocks, frames = [], 0
            while len(block := handle.read(1 << 16, dtype="float32", always_2d=True)):
                blocks.append(block)
                frames += len(block)
                if limit is not None and frames > limit:
                    raise _TooLong(max_seconds)
            data = np.concatenate(blocks) if blocks else np.zeros((0, handle.channels), np.float32)
    return np.ascontiguousarray(data.T), rate, declared, True


def _decode_ffmpeg(
    source: Path | io.BytesIO, max_seconds: float | None = None
) -> tuple[np.ndarray, int, float | None, bool]:
    from torchcodec.decoders import AudioDecoder

    decoder = AudioDecoder(source.getvalue() if isinstance(source, io.BytesIO) else str(source))
    if max_seconds is None:
        samples = decoder.get_all_samples()
    else:  # decode at most a little past the limit, whatever the container's header claims (or does not)
        samples = decoder.get_samples_played_in_range(0.0, max_seconds + 1.0)
        if samples.data.shape[-1] > max_seconds * samples.sample_rate:
            raise _TooLong(max_seconds)
    declared = getattr(decoder.metadata, "duration_seconds_from_header", None)
    return samples.data.numpy(), int(samples.sample_rate), (float(declared) if declared else None), False


def wav_header_duration(head: bytes) -> float | None:
    """
    The length in seconds that a RIFF/WAVE header's `data` chunk announces, from the file's first bytes (None when
    `head` is not a WAV header or the size is a streaming placeholder). libsndfile quietly clamps a `data` size larger
    than the file to what the file holds, so a truncated WAV can only be recognised from the header itself.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset, block_align, rate = 12, None, None
    while offset + 8 <= len(head):
        chunk, size = head[offset:offset + 4], struct.unpack("<I", head[offset + 4:offset + 8])[0]
        if chunk == b"fmt " and offset + 20 <= len(head):
            rate = struct.unpack("<I", head[offset + 12:offset + 16])[0]
            block_align = struct.unpack("<H", head[offset + 20:offset + 22])[0] if offset + 22 <= len(head) else None
        elif chunk == b"data":
            if not block_align or not rate or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align / rate
        offset += 8 + size + (size & 1)
    return None


def probe_duration(path: str | Path) -> float | None:
    """
    The length in seconds a file's header announces, without decoding it; None when the header does not say (a FLAC
    written to a pipe, for which libsndfile reports 2**63 - 1 frames, i.e. "5.8e14 s"), or the file is unreadable.
    For limits checked before decoding (the Space's maximum duration); `load_audio` measures the decoded length.
    """
    try:
        import soundfile

        info = soundfile.info(str(path))
        if info.samplerate > 0 and 0 < info.frames < _UNKNOWN_FRAMES:
            return info.frames / info.samplerate
        if info.samplerate > 0:
            return None  # a libsndfile format whose header gives no length: do not ask FFmpeg to guess
    except Exception:  # noqa: BLE001 - not a libsndfile format: FFmpeg's header below
        pass
    try:
        from torchcodec.decoders import AudioDecoder

        duration = AudioDecoder(str(path)).metadata.duration_seconds_from_header
        return float(duration) if duration else None
    except Exception:  # noqa: BLE001 - unreadable: the decoder reports it properly later
        return None


def _read_head(source: Path | io.BytesIO, size: int = 1 << 16) -> bytes:
    if isinstance(source, io.BytesIO):
        return source.getbuffer()[:size].tobytes()
    with open(source, "rb") as handle:
        return handle.read(size)


def _length_warning(frames: int, rate: int, declared: float | None, exact: bool) -> str | None:
    if rate <= 0:  # the scorer refuses such a rate with its own message
        return None
    duration = frames / rate
    if declared is not None and declared - duration >= TRUNCATED_MIN_SECONDS:
        if duration < declared * (TRUNCATED_FRACTION if exact else TRUNCATED_ESTIMATE_FRACTION):
            return truncated_warning(duration, declared)
    if duration < SHORT_CLIP_SECONDS:
        return short_clip_warning(duration)
    return None


def _first_line(error: Exception) -> str:
    text = re.sub(r"\S+\.(?:cpp|h|c):\d+,?\s*", "", str(error)).strip()  # drop decoders' source locations
    text = re.sub(r"^\w+Decoder,\s*", "", text)
    return text.splitlines()[0] if text else type(error).__name__


def load_audio(path: str | Path, channel: str | int = "first", max_seconds: float | None = None) -> DecodedAudio:
    """
    Decodes an audio file (wav, flac, ogg, mp3, m4a, ...; any sample rate; any number of channels).

    `max_seconds` refuses longer audio while decoding, before it is all in memory (a header need not state a length,
    and a few KB of FLAC can hold hours of silence); None decodes whatever length there is.

    Raises:
        AudioFileError: the file is missing, empty, not audio, holds no samples, or runs past `max_seconds`; the
            message names the file.
    """
    path = Path(path)
    check_readable_file(path)

    return _decode(path, path, channel, path.suffix.lower() in SOUNDFILE_SUFFIXES, max_seconds)


def check_readable_file(path: str | Path) -> None:
    """
    Raises an `AudioFileError` saying why `path` cannot be opened as an audio file (missing, a broken or looping
    symbolic link, a folder, not a regular file, unreadable, empty); returns None for a readable, non-empty file.
    """
    path = Path(path)
    try:
        info = path.stat()  # follows symbolic links
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise AudioFileError(path, "symbolic link loop (the link points back at itself)") from None
        if path.is_symlink():
            raise AudioFileError(path, f"broken symbolic link (its target {os.readlink(path)} does not exist)") from None
        if error.errno == errno.ENOENT:
            raise AudioFileError(path, "no such file") from None
        if error.errno == errno.ENOTDIR:
            raise AudioFileError(path, "no such file (a part of the path is not a folder)") from None
        raise AudioFileError(path, f"cannot be opened ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioFileError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise AudioFileError(path, "is not a regular file (a pipe, socket or device)")
    if not os.access(path, os.R_OK):
        raise AudioFileError(path, "permission denied (the file is not readable)")
    if info.st_size == 0:
        raise AudioFileError(path, "file is empty (0 bytes)")


def decode_bytes(
    data: bytes, name: str = "audio bytes", channel: str | int = "first", max_seconds: float | None = None
) -> DecodedAudio:
    """Like `load_audio`, for an encoded file held in memory (e.g. an undecoded 🤗 datasets `Audio` value)."""
    if not data:
        raise AudioFileError(name, "file is empty (0 bytes)")
    suffix = Path(name).suffix.lower()
    return _decode(io.BytesIO(data), name, channel, suffix in SOUNDFILE_SUFFIXES or not suffix, max_seconds)


def _decode(
    source: Path | io.BytesIO, name, channel: str | int, soundfile_first: bool, max_seconds: float | None = None
) -> DecodedAudio:
    decoders = [_decode_soundfile, _decode_ffmpeg] if soundfile_first else [_decode_ffmpeg, _decode_soundfile]
    failures = []
    for decode in decoders:
        try:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            samples, sampling_rate, declared, exact = decode(source, max_seconds)
            break
        except _TooLong as error:
            raise AudioFileError(name, str(error)) from None
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
    if exact and (wav_declared := wav_header_duration(_read_head(source))) is not None:
        declared = wav_declared  # libsndfile clamped frames to what the file holds: trust the header's own claim
    return DecodedAudio(
        np.ascontiguousarray(waveform, dtype=np.float32),
        sampling_rate,
        samples.shape[0],
        declared_duration=declared,
        warning=_length_warning(samples.shape[1], sampling_rate, declared, exact),
    )
