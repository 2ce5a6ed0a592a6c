"""Decoding audio files to mono float32 waveforms: the one decode path of the CLI, the API, the Space and eval."""

import errno
import io
import os
import re
import stat
import struct
import time
from collections.abc import Iterator
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


class AudioTooLongError(AudioFileError):
    """Audio that runs past `max_seconds` (the caller's limit, not a fault of the file); found while decoding."""

    def __init__(self, path: str | Path, max_seconds: float):
        self.max_seconds = max_seconds
        super().__init__(path, f"audio is longer than {max_seconds:g} s, the limit here")


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


# No speech recording is sampled this slowly: a lower rate in a header is damage or forgery, and resampling it to
# 16 kHz would turn a few KB into hours of audio (a 1 Hz header makes 32 KB a 16,000 s clip). The feature extractor
# (a Hub file, which cannot import this package) refuses the same rates in arrays.
MIN_SAMPLING_RATE = 4000
# Decoding and resampling run in blocks of this many input frames (soundfile) or seconds (FFmpeg): memory is bounded
# by a block, not by the file.
BLOCK_FRAMES = 1 << 16
FFMPEG_BLOCK_SECONDS = 20.0
# Resampled audio longer than this goes to a spill file (a numpy memmap of a deleted temporary file in
# $DISTILL_MOS_SPILL_DIR, else the system's temporary folder) instead of memory; the file's space is freed when
# the array is.
SPILL_SECONDS = 600.0


class _Verdict(Exception):
    """A verdict on the file itself (too long, a forged rate, NaN samples): not a decoder failure to retry with another."""


class _TooLong(_Verdict):
    """The audio runs past `max_seconds` (the decoders do not know the input's name: `_open` gives the public error)."""

    def __init__(self, max_seconds: float):
        super().__init__(max_seconds)
        self.max_seconds = max_seconds


def low_rate_message(rate: int) -> str:
    """Why a sampling rate under `MIN_SAMPLING_RATE` is refused."""
    return (
        f"a sampling rate of {rate} Hz is below {MIN_SAMPLING_RATE} Hz, which no speech recording uses (the header is "
        "probably damaged); refused rather than resampled into a much longer clip"
    )


@dataclass
class _Stream:
    """An opened decoder: `blocks` yields (channels, frames) float32 arrays in order."""

    rate: int
    channels: int
    declared: float | None  # seconds the header announces, None when it does not say
    exact: bool  # libsndfile (sample-exact lengths) rather than FFmpeg's estimates
    blocks: Iterator[np.ndarray]


def _open_soundfile(source: Path | io.BytesIO, max_seconds: float | None = None) -> _Stream:
    import soundfile

    handle = soundfile.SoundFile(source if isinstance(source, io.BytesIO) else _native_name(source))
    rate = int(handle.samplerate)
    known = 0 < handle.frames < _UNKNOWN_FRAMES  # else the header does not say (libsndfile reports 2**63 - 1)
    limit = None if max_seconds is None or rate <= 0 else int(max_seconds * rate)
    if known and limit is not None and handle.frames > limit:
        handle.close()
        raise _TooLong(max_seconds)

    def blocks() -> Iterator[np.ndarray]:
        # Counted block by block whatever the header claims: a few KB of FLAC can hold hours of silence, and the
        # limit must hold before the samples are in memory.
        with handle:
            frames = 0
            while len(block := handle.read(BLOCK_FRAMES, dtype="float32", always_2d=True)):
                frames += len(block)
                if limit is not None and frames > limit:
                    raise _TooLong(max_seconds)
                yield block.T

    declared = handle.frames / rate if known and rate > 0 else None
    return _Stream(rate, handle.channels, declared, True, blocks())


def _open_ffmpeg(source: Path | io.BytesIO, max_seconds: float | None = None) -> _Stream:
    from torchcodec.decoders import AudioDecoder

    if isinstance(source, io.BytesIO):
        decoder = AudioDecoder(source.getvalue())
    elif _is_utf8(str(source)):
        decoder = AudioDecoder(str(source))
    else:  # FFmpeg takes names as UTF-8 only: give it the opened file instead (closed when the decoder goes)
        decoder = AudioDecoder(open(source, "rb"))  # noqa: SIM115
    rate, channels = int(decoder.metadata.sample_rate), int(decoder.metadata.num_channels)
    declared = getattr(decoder.metadata, "duration_seconds_from_header", None)

    def blocks() -> Iterator[np.ndarray]:
        # torchcodec decodes audio forward from where it stopped (it only seeks back to the start when asked for an
        # earlier range), so consecutive ranges give exactly the samples of one `get_all_samples()` call.
        start, frames = 0.0, 0
        stop_at = None if max_seconds is None else max_seconds + 1.0  # a little past the limit, whatever the header
        while stop_at is None or start < stop_at:
            end = start + FFMPEG_BLOCK_SECONDS if stop_at is None else min(start + FFMPEG_BLOCK_SECONDS, stop_at)
            try:
                samples = decoder.get_samples_played_in_range(start, end)
            except RuntimeError as error:
                if frames and "No audio frames were decoded" in str(error):
                    return  # past the end of the stream
                raise
            data = samples.data.numpy()
            if data.shape[-1] == 0:
                return
            frames += data.shape[-1]
            if max_seconds is not None and frames > max_seconds * rate:
                raise _TooLong(max_seconds)
            yield data
            start = end

    return _Stream(rate, channels, float(declared) if declared else None, False, blocks())


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a POSIX name with bytes that are not UTF-8 (surrogates after os.fsdecode)
        return False
    return True


def _native_name(path: Path) -> str | bytes:
    """`path` as libsndfile can open it: the str, or its bytes on POSIX when the name is not UTF-8."""
    return str(path) if _is_utf8(str(path)) or os.name != "posix" else os.fsencode(path)


class _SpillBuffer:
    """
    Collects (samples,) float32 blocks in order; `array()` gives them as one array, in memory up to `spill_samples`,
    else as a memmap of a temporary file deleted at once (its space is freed when the last view of the array goes).
    """

    def __init__(self, spill_samples: int):
        self.spill_samples, self.blocks, self.length, self.file = spill_samples, [], 0, None

    def write(self, block: np.ndarray) -> None:
        if not block.shape[0]:
            return
        self.length += block.shape[0]
        if self.file is None and self.length > self.spill_samples:
            import tempfile

            self.file = tempfile.TemporaryFile(dir=os.environ.get("DISTILL_MOS_SPILL_DIR") or None)
            for kept in self.blocks:
                self.file.write(kept.tobytes())
            self.blocks = []
        if self.file is None:
            self.blocks.append(np.array(block, dtype=np.float32))
        else:
            self.file.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())

    def array(self) -> np.ndarray:
        if self.file is None:
            return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)
        self.file.flush()
        # "r+": writable, so torch.from_numpy takes it without a warning; nothing writes to it
        waveform = np.memmap(self.file, dtype=np.float32, mode="r+", shape=(self.length,))
        self.file.close()  # the mapping keeps the (already unlinked) file alive
        _release_pages_while_alive(waveform)
        return waveform


# How often the pages of a spill file that scoring has read are handed back (see `_release_pages_while_alive`).
RELEASE_INTERVAL_SECONDS = 0.05


def _release_pages_while_alive(waveform: np.memmap) -> None:
    """
    Keeps the resident memory of a spill file's mapping near zero while it lives. Every page the model reads stays
    mapped into the process (and counted in its RSS) until unmapped, so scoring hours of audio would end with the
    whole 16 kHz file resident (230 MB an hour). `madvise(MADV_DONTNEED)` on a shared file mapping only drops the
    process's page table entries: the data stay in the file and the page cache, and a later read faults the page
    back in. A daemon thread does so every `RELEASE_INTERVAL_SECONDS` until the array is garbage collected.
    """
    import mmap
    import threading
    import weakref

    if not hasattr(mmap, "MADV_DONTNEED") or getattr(waveform, "_mmap", None) is None:
        return  # not Linux/BSD: the pages stay resident (and reclaimable: they are clean file pages)
    alive = weakref.ref(waveform)

    def release() -> None:
        while (array := alive()) is not None:
            try:
                array._mmap.madvise(mmap.MADV_DONTNEED)
            except (ValueError, OSError):  # closed meanwhile
                return
            del array
            time.sleep(RELEASE_INTERVAL_SECONDS)

    threading.Thread(target=release, name="distill-mos-spill-release", daemon=True).start()


@dataclass
class WavHeader:
    """The fields of a RIFF/WAVE header that matter here (None where the header's first bytes do not hold them)."""

    format_tag: int | None = None
    channels: int | None = None
    rate: int | None = None
    block_align: int | None = None
    bits: int | None = None
    data_size: int | None = None


def read_wav_header(head: bytes) -> WavHeader | None:
    """The `fmt ` and `data` fields of a RIFF/WAVE header from a file's first bytes; None when `head` is not WAV."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    header, offset = WavHeader(), 12
    while offset + 8 <= len(head):
        chunk, size = head[offset:offset + 4], struct.unpack("<I", head[offset + 4:offset + 8])[0]
        if chunk == b"fmt " and offset + 24 <= len(head):
            header.format_tag, header.channels, header.rate = struct.unpack("<HHI", head[offset + 8:offset + 16])
            header.block_align, header.bits = struct.unpack("<HH", head[offset + 20:offset + 24])
        elif chunk == b"data":
            header.data_size = size
            break
        offset += 8 + size + (size & 1)
    return header


def wav_header_duration(head: bytes) -> float | None:
    """
    The length in seconds that a RIFF/WAVE header's `data` chunk announces, from the file's first bytes (None when
    `head` is not a WAV header or the size is a streaming placeholder). libsndfile quietly clamps a `data` size larger
    than the file to what the file holds, so a truncated WAV can only be recognised from the header itself.
    """
    header = read_wav_header(head)
    if header is None or not header.block_align or not header.rate or header.data_size in (None, 0, 0xFFFFFFFF):
        return None
    return header.data_size // header.block_align / header.rate


def _header_warning(head: bytes) -> str | None:
    """A WAV header whose bit depth is not a whole number of bytes: libsndfile reads it as the next container size."""
    header = read_wav_header(head)
    if header is None or header.format_tag != 1 or not header.bits or header.bits % 8 == 0:
        return None
    read_as = "unsigned 8-bit" if header.bits < 8 else f"{-(-header.bits // 8) * 8}-bit"
    return (
        f"the WAV header says {header.bits} bits per sample, which is not a whole number of bytes; the samples were "
        f"read as {read_as} PCM, so the levels may be wrong if the header is damaged"
    )


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


# libsndfile's words for a header it cannot make sense of, which say nothing to a user (and "possibly a pipe?" for a
# regular file that it only failed to parse): said in words instead, with the header's fields where it is a WAV.
_OPAQUE_LIBSNDFILE = ("SF_INFO struct incomplete", "Unspecified internal error", "possibly a pipe?")


def _failure_reason(failures: list[str], head: bytes) -> str:
    first = failures[0]
    if not any(opaque in first for opaque in _OPAQUE_LIBSNDFILE):
        return first
    header = read_wav_header(head)
    if header is not None and header.rate is not None:
        return (
            f"the WAV header is damaged: it declares format tag {header.format_tag}, {header.channels} channel(s), "
            f"{header.rate} Hz and {header.bits} bits per sample, which no decoder can read together"
        )
    return "the header is damaged: it declares a sampling rate, channel count or sample format that cannot be decoded"


class _Checks:
    """
    What the samples themselves say, gathered block by block: NaN or infinite samples (refused once counted),
    silence, a constant level (not speech) and samples far outside [-1, 1].
    """

    def __init__(self):
        self.frames, self.bad, self.first_bad = 0, 0, None
        self.peak, self.low, self.high = 0.0, np.inf, -np.inf

    def update(self, mono: np.ndarray) -> bool:
        """Takes the next (samples,) block; False when it holds NaN or infinite samples (not to be resampled)."""
        finite = np.isfinite(mono)
        ok = bool(finite.all())
        if not ok:
            bad = np.flatnonzero(~finite)
            self.first_bad = self.frames + int(bad[0]) if self.first_bad is None else self.first_bad
            self.bad += bad.size
        elif mono.size:
            self.low, self.high = min(self.low, float(mono.min())), max(self.high, float(mono.max()))
            self.peak = max(self.peak, abs(self.low), abs(self.high))
        self.frames += mono.shape[0]
        return ok and self.bad == 0

    def raise_if_bad(self) -> None:
        if self.bad:
            raise _Verdict(
                f"audio contains {self.bad} NaN or infinite sample(s) (first at sample {self.first_bad}); the score "
                "would be meaningless. Repair or drop the clip."
            )

    @property
    def silent(self) -> bool:
        return self.peak == 0.0

    def warnings(self) -> list[str]:
        if self.frames == 0 or self.silent:
            return []
        if self.low == self.high:
            return [constant_warning(self.low)]
        if self.peak > FAR_OUTSIDE_PEAK:
            return [level_warning(self.peak)]
        return []


CONSTANT_WARNING = "audio is constant (every sample is {value:.3g}): a DC level, not speech, so its score says nothing"
LEVEL_WARNING = (
    "samples reach {peak:.3g}, far outside [-1, 1]; float audio must be scaled to [-1, 1] (the model normalises each "
    "window's peak, but such values usually mean the data is not audio samples)"
)
FAR_OUTSIDE_PEAK = 2.0


def constant_warning(value: float) -> str:
    return CONSTANT_WARNING.format(value=value)


def level_warning(peak: float) -> str:
    return LEVEL_WARNING.format(peak=peak)


def join_warnings(*notes: str | None) -> str | None:
    """
    The warnings that apply, as one text: "a; b", each note's own closing full stop dropped before a "; " (not
    "speech.; audio"), the last one's kept; None when none applies.
    """
    notes = [note.strip() for note in notes if note]
    return "; ".join([note.rstrip(".") for note in notes[:-1]] + notes[-1:]) or None


def _check_channel(name, channel: str | int, channels: int) -> None:
    if channel in ("first", "mean"):
        return
    if not 0 <= int(channel) < channels:
        raise _Verdict(f"channel {int(channel)} requested but the audio has {channels} channel(s)")


def _open(source: Path | io.BytesIO, name, soundfile_first: bool, max_seconds: float | None, consume):
    """
    Opens `source` with each decoder in turn and runs `consume(stream)` on the first that reads it to the end (a
    decoder failing half way gives way to the next); -> (stream, what consume returned). A verdict on the file (too
    long, a forged rate, NaN samples) is not retried. Raises AudioFileError naming `name`.
    """
    openers = [_open_soundfile, _open_ffmpeg] if soundfile_first else [_open_ffmpeg, _open_soundfile]
    failures = []
    for open_stream in openers:
        try:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            stream = open_stream(source, max_seconds)
            if 0 < stream.rate < MIN_SAMPLING_RATE:
                raise _Verdict(low_rate_message(stream.rate))
            return stream, consume(stream)
        except _TooLong as error:
            raise AudioTooLongError(name, error.max_seconds) from None
        except _Verdict as error:
            raise AudioFileError(name, str(error)) from None
        except Exception as error:  # noqa: BLE001 - each decoder has its own exception types
            failures.append(_first_line(error))
    raise AudioFileError(name, f"not a readable audio file ({_failure_reason(failures, _read_head(source))})")


def _declared(source, stream: _Stream) -> float | None:
    if stream.exact and (wav_declared := wav_header_duration(_read_head(source))) is not None:
        return wav_declared  # libsndfile clamped frames to what the file holds: trust the header's own claim
    return stream.declared


def load_audio(path: str | Path, channel: str | int = "first", max_seconds: float | None = None) -> DecodedAudio:
    """
    Decodes an audio file (wav, flac, ogg, mp3, m4a, ...; any sample rate of 4 kHz or more; any number of channels)
    into memory at its own rate. For scoring, `load_resampled` gives the 16 kHz waveform in bounded memory instead.

    `max_seconds` refuses longer audio while decoding, before it is all in memory (a header need not state a length,
    and a few KB of FLAC can hold hours of silence); None decodes whatever length there is.

    Raises:
        AudioFileError: the file is missing, empty, not audio, holds no samples, or has a rate under 4 kHz; the
            message names the file.
        AudioTooLongError: (an AudioFileError) the audio runs past `max_seconds`.
    """
    path = Path(os.fsdecode(path))
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
        if error.errno == errno.EACCES:  # before looking at the link itself, which would be refused the same way
            raise AudioFileError(path, "permission denied (a folder on its path may not be searched)") from None
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
    def consume(stream: _Stream):
        _check_channel(name, channel, stream.channels)
        blocks = list(stream.blocks)
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((stream.channels, 0), np.float32)

    stream, samples = _open(source, name, soundfile_first, max_seconds, consume)
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise AudioFileError(name, "contains no audio samples")
    waveform = select_channel(samples, channel)
    declared = _declared(source, stream)
    return DecodedAudio(
        np.ascontiguousarray(waveform, dtype=np.float32),
        stream.rate,
        samples.shape[0],
        declared_duration=declared,
        warning=join_warnings(
            _length_warning(samples.shape[1], stream.rate, declared, stream.exact),
            _header_warning(_read_head(source)) if stream.exact else None,
        ),
    )


@dataclass
class ResampledAudio:
    """
    A decoded file resampled for scoring: `waveform` is the selected channel(s) mixed to mono at `target_rate`,
    float32, shape (samples,); a read-only-in-practice memmap of a deleted spill file when longer than
    `SPILL_SECONDS` (so that hours of audio cost disk, not memory). `sampling_rate`, `channels`, `frames` and
    `duration` describe the file as stored. `warning` says what makes the score less trustworthy (silent, very
    short, far shorter than the header says, constant, far outside [-1, 1], an odd bit depth), else None.
    """

    waveform: np.ndarray
    target_rate: int
    sampling_rate: int
    channels: int
    frames: int
    declared_duration: float | None = None
    warning: str | None = None

    @property
    def duration(self) -> float:
        """Length of the file in seconds."""
        return self.frames / self.sampling_rate


def load_resampled(
    path: str | Path,
    channel: str | int = "first",
    max_seconds: float | None = None,
    target_rate: int = 16000,
    spill_seconds: float | None = None,
) -> ResampledAudio:
    """
    Decodes an audio file and resamples it to `target_rate` block by block, in memory bounded by a block (plus the
    16 kHz result up to `spill_seconds` (default `SPILL_SECONDS`), beyond which it goes to a spill file): any length of audio can be scored.
    The samples equal `resample(load_audio(path).waveform, rate, target_rate)` (the same torchaudio kernel; see
    `feature_extraction_distillmos.StreamingResampler`).

    Raises:
        AudioFileError: as `load_audio`, and for what the scorer refuses (NaN samples, a rate that cannot be
            resampled at a sane cost); the message names the file.
    """
    path = Path(os.fsdecode(path))
    check_readable_file(path)
    return _decode_resampled(
        path, path, channel, path.suffix.lower() in SOUNDFILE_SUFFIXES, max_seconds, target_rate, spill_seconds
    )


def decode_bytes_resampled(
    data: bytes,
    name: str = "audio bytes",
    channel: str | int = "first",
    max_seconds: float | None = None,
    target_rate: int = 16000,
    spill_seconds: float | None = None,
) -> ResampledAudio:
    """Like `load_resampled`, for an encoded file held in memory (e.g. an undecoded 🤗 datasets `Audio` value)."""
    if not data:
        raise AudioFileError(name, "file is empty (0 bytes)")
    suffix = Path(name).suffix.lower()
    return _decode_resampled(
        io.BytesIO(data), name, channel, suffix in SOUNDFILE_SUFFIXES or not suffix, max_seconds, target_rate,
        spill_seconds,
    )


def _decode_resampled(
    source, name, channel, soundfile_first: bool, max_seconds, target_rate: int, spill_seconds: float | None
) -> ResampledAudio:
    from feature_extraction_distillmos import StreamingResampler  # torch: only when scoring

    spill_seconds = SPILL_SECONDS if spill_seconds is None else spill_seconds

    def consume(stream: _Stream):
        _check_channel(name, channel, stream.channels)
        checks, output = _Checks(), _SpillBuffer(int(spill_seconds * target_rate))
        try:
            resampler = StreamingResampler(stream.rate, target_rate, name="audio")
            for block in stream.blocks:
                mono = select_channel(block, channel)
                if checks.update(mono):
                    output.write(resampler.push(mono))
            checks.raise_if_bad()
            if checks.frames:
                output.write(resampler.finish())
        except ValueError as error:  # the resampler's verdicts (cost, overflow): the file's, not the decoder's
            raise _Verdict(str(error)) from None
        return checks, output

    stream, (checks, output) = _open(source, name, soundfile_first, max_seconds, consume)
    if checks.frames == 0:
        raise AudioFileError(name, "contains no audio samples")
    declared = _declared(source, stream)
    return ResampledAudio(
        output.array(),
        target_rate,
        stream.rate,
        stream.channels,
        checks.frames,
        declared_duration=declared,
        warning=join_warnings(
            SILENT_WARNING if checks.silent else None,
            _length_warning(checks.frames, stream.rate, declared, stream.exact),
            *checks.warnings(),
            _header_warning(_read_head(source)) if stream.exact else None,
        ),
    )
