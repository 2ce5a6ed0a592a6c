"""
`distill-mos --stream SOURCE`: a live quality meter. One JSON line per hop on stdout, flushed at once (so `| jq`
and `| tee` work live), then a summary line; see `distill_mos.stream` for what is scored.

    ffmpeg -i call.webm -f wav - | distill-mos --stream -              # a WAV on stdin (any PCM or float WAV)
    arecord -f S16_LE -r 16000 -c 1 | distill-mos --stream - --input-format s16le --input-rate 16000 --input-channels 1
    distill-mos --stream talk.flac                                      # a file (soundfile reads it as it goes)
    distill-mos --stream https://example.org/live.m3u8                  # anything FFmpeg opens: URLs, devices, ...

Ends cleanly at the end of the input (exit 0), on Ctrl-C (SIGINT: summary, exit 130) or when stdout is closed
(`| head`); a source that sends nothing for `--timeout` seconds (default 30) ends with an error (exit 1), as does
input that cannot be scored (a message on stderr and in the summary line).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from .audio import SOUNDFILE_SUFFIXES
from .columns import DTYPE_CHOICES

RAW_FORMATS = {"s16le": "<i2", "s32le": "<i4", "f32le": "<f4", "u8": "u1"}
BLOCK_SECONDS = 0.02  # frames read per block: 20 ms, the latency the reader adds
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class SourceError(Exception):
    """The source cannot be opened or read: one line for the user."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-mos --stream",
        description="Score a live stream: one JSON line per hop (window start/end in s, score, running MOS).",
        epilog=__doc__.split("\n\n", 2)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stream", dest="source", required=True, metavar="SOURCE",
                        help="'-' (stdin: WAV, or raw PCM with --input-format), a file, or anything FFmpeg opens")
    parser.add_argument("--hop", type=float, default=1.0, help="seconds between updates (default 1)")
    parser.add_argument("--input-format", choices=sorted(RAW_FORMATS), help="stdin is raw PCM of this sample type")
    parser.add_argument("--input-rate", type=int, help="raw PCM: sampling rate in Hz")
    parser.add_argument("--input-channels", type=int, default=1, help="raw PCM: interleaved channels (default 1)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="end with an error when the source sends nothing for this many seconds (default 30)")
    parser.add_argument("--model", help="model folder or Hub id (default: as distill-mos)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES, help="precision (default float32)")
    return parser


# --- sources: each yields ("format", rate, channels), then float32 / integer blocks of shape (frames, channels) ---


def _soundfile_blocks(handle):
    import soundfile

    try:
        with soundfile.SoundFile(handle, closefd=False) if isinstance(handle, int) else soundfile.SoundFile(handle) as f:
            yield ("format", f.samplerate, f.channels)
            frames = max(1, int(f.samplerate * BLOCK_SECONDS))
            while True:
                block = f.read(frames, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block
    except soundfile.LibsndfileError as error:
        raise SourceError(f"not a readable audio stream ({error})") from None


def _raw_blocks(fd: int, dtype: str, rate: int, channels: int):
    yield ("format", rate, channels)
    width = np.dtype(dtype).itemsize * channels
    frames = max(1, int(rate * BLOCK_SECONDS))
    leftover = b""
    while True:
        # os.read on the descriptor, not sys.stdin.buffer: a reader thread blocked in a buffered read holds its lock,
        # and the interpreter aborts at exit (SIGABRT) when the main thread ends first (Ctrl-C, a timeout)
        data = os.read(fd, frames * width)
        if not data:
            if leftover:
                print(f"distill-mos --stream: the input stopped mid-sample ({len(leftover)} byte(s) of an incomplete "
                      "frame dropped)", file=sys.stderr)
            return
        data = leftover + data
        usable = len(data) - len(data) % width
        leftover = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype=dtype).reshape(-1, channels)


def _ffmpeg_blocks(source: str, processes: list):
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SourceError(f"{source} is not a file soundfile reads, and FFmpeg (to open it) is not installed")
    process = subprocess.Popen(
        [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-i", source, "-vn", "-c:a", "pcm_f32le", "-f", "wav", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    processes.append(process)
    try:
        yield from _soundfile_blocks(process.stdout.fileno())
    except SourceError:
        process.wait(10)
        lines = process.stderr.read().decode(errors="replace").strip().splitlines()
        raise SourceError(f"FFmpeg cannot open {source}: {lines[-1] if lines else 'no audio'}") from None


def open_source(args, processes: list):
    if args.source == "-":
        if args.input_format:
            if not args.input_rate:
                raise SourceError("--input-format needs --input-rate (Hz) and, unless mono, --input-channels")
            return _raw_blocks(sys.stdin.fileno(), RAW_FORMATS[args.input_format], args.input_rate, args.input_channels)
        return _soundfile_blocks(sys.stdin.fileno())
    if args.input_format:
        raise SourceError("--input-format describes raw PCM on stdin: use it with --stream -")
    path = Path(args.source)
    if path.is_file() and path.suffix.lower() in SOUNDFILE_SUFFIXES:
        return _soundfile_blocks(str(path))
    return _ffmpeg_blocks(args.source, processes)


def _reader(blocks, out: queue.Queue) -> None:
    """Runs in a thread: the source's blocks into `out`, then None (end) or the error."""
    try:
        for item in blocks:
            out.put(item)
        out.put(None)
    except SourceError as error:
        out.put(error)
    except Exception as error:  # noqa: BLE001 - a reader failure ends the stream with its reason
        out.put(SourceError(f"reading the source failed: {type(error).__name__}: {error}"))


def _emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if "-h" in argv or "--help" in argv:  # `distill-mos --stream --help`: argparse would take --help for SOURCE
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if not args.hop > 0 or not args.timeout > 0:
        print("distill-mos --stream: --hop and --timeout must be positive numbers of seconds", file=sys.stderr)
        return EXIT_USAGE
    processes: list = []
    try:
        blocks = open_source(args, processes)
    except SourceError as error:
        print(f"distill-mos --stream: {error}", file=sys.stderr)
        return EXIT_USAGE

    from .scorer import DistillMOSScorer
    from .stream import StreamScorer

    scorer = DistillMOSScorer.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    live = StreamScorer(scorer, hop_seconds=args.hop)
    items: queue.Queue = queue.Queue(maxsize=256)  # bounded: a fast file is read no further ahead than this
    threading.Thread(target=_reader, args=(blocks, items), daemon=True, name="distill-mos-stream-reader").start()
    rate, error, status = None, None, EXIT_OK
    try:
        while True:
            try:
                item = items.get(timeout=args.timeout)
            except queue.Empty:
                error, status = f"no audio from {args.source} for {args.timeout:g} s: ending the stream", EXIT_ERROR
                break
            if item is None:
                break
            if isinstance(item, SourceError):
                error, status = str(item), EXIT_ERROR
                break
            if isinstance(item, tuple):
                _, rate, _ = item
                continue
            try:
                updates = live.push(item, rate)
            except ValueError as bad:
                error, status = str(bad), EXIT_ERROR
                break
            for update in updates:
                _emit(update.as_dict())
        summary = live.flush()
        for update in summary.updates:
            _emit(update.as_dict())
        _emit({**summary.as_dict(), "error": error})
    except KeyboardInterrupt:
        summary = live.flush()
        _emit({**summary.as_dict(), "error": None, "interrupted": True})
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # `| head`: the reader is gone; nothing more to say to it
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush does not fail
        except OSError:
            pass
        status = EXIT_OK
    finally:
        for process in processes:
            process.kill()
            process.wait()
    if error:
        print(f"distill-mos --stream: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
