"""
The Space's scoring: the library's decode and scoring path behind the Space's limits, the bundled examples (to show
their human MOS), and two lanes of concurrency so that short requests never wait behind long ones.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from distill_mos import DistillMOSScorer, FileScore
from distill_mos.results import Item
from settings import Limits, format_seconds

logger = logging.getLogger("distill_mos.space")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Example:
    path: Path
    human_mos: float
    condition: str


def load_examples(folder: Path = EXAMPLES_DIR) -> list[Example]:
    """The bundled GenSpeech clips with their human listening-test MOS (examples/labels.csv)."""
    labels = folder / "labels.csv"
    if not labels.is_file():
        return []
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Example(folder / row["file"], float(row["human_mos"]), row["condition"])
        for row in rows
        if (folder / row["file"]).is_file()
    ]


def probe_duration(path: str | Path) -> float | None:
    """
    Duration from the file header, without decoding (None when the header does not say, e.g. a FLAC written to a
    pipe, which libsndfile reports as 2**63 - 1 frames: "5.8e14 s"). The library's probe, so that the Space and the
    command line tool agree.
    """
    from distill_mos.audio import probe_duration as header_duration

    return header_duration(path)


class Busy(Exception):
    """More requests are waiting than the Space's queue allows."""


class Lanes:
    """
    Two concurrency limits, "long" and "short": a request whose files all state a length in their headers and add up
    to at most `Limits.short_seconds` takes a short slot, any other a long slot. Two long clips then hold the long
    slots only, and a 1 s request is scored at once in its own slot (issue 23 §7: it used to wait ~214 s).
    Requests wait for their lane's slot in order; more than `Limits.queue_size` waiting in all are refused.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self._slots = {
            "long": threading.Semaphore(limits.concurrency),
            "short": threading.Semaphore(limits.short_concurrency),
        }
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = {"long": 0, "short": 0}

    def lane(self, durations: list[float | None]) -> str:
        known = all(d is not None for d in durations)
        return "short" if known and sum(durations) <= self.limits.short_seconds else "long"

    @contextlib.contextmanager
    def slot(self, lane: str):
        semaphore = self._slots[lane]
        if not semaphore.acquire(blocking=False):
            with self._lock:
                if self.waiting >= self.limits.queue_size:
                    raise Busy(f"{self.waiting} requests are already waiting")
                self.waiting += 1
            try:
                semaphore.acquire()
            finally:
                with self._lock:
                    self.waiting -= 1
        with self._lock:
            self.running[lane] += 1
        try:
            yield
        finally:
            with self._lock:
                self.running[lane] -= 1
            semaphore.release()


class SpaceScorer:
    """The library's scorer behind the Space's limits; every outcome is a `FileScore`, nothing raises."""

    def __init__(self, scorer: DistillMOSScorer, limits: Limits, examples: list[Example] | None = None):
        self.scorer = scorer
        self.limits = limits
        self.lanes = Lanes(limits)
        self.examples = examples or []
        self._human_mos = {}
        for example in self.examples:
            self._human_mos[(example.path.stat().st_size, _sha256(example.path))] = example

    def example_for(self, path: str | Path) -> Example | None:
        """The bundled example whose bytes this file has (so its human MOS can be shown), else None."""
        try:
            size = os.path.getsize(path)
            if not any(size == key[0] for key in self._human_mos):
                return None
            return self._human_mos.get((size, _sha256(path)))
        except OSError:
            return None

    def _check(self, path: str | Path) -> tuple[str | None, float | None]:
        """(a readable reason why this file is refused before decoding, or None; its duration by the header)."""
        try:
            size = os.path.getsize(path)
        except OSError:
            return None, 0.0  # missing file: the decoder's own message says so, at no cost
        if size > self.limits.max_upload_bytes:
            return (
                f"file is too large ({size / 1e6:.1f} MB); this Space accepts files up to "
                f"{self.limits.max_upload_mb:g} MB"
            ), None
        duration = probe_duration(path)
        if duration is not None and duration > self.limits.max_seconds:
            return self._too_long(duration), duration
        return None, duration

    def check_limits(self, path: str | Path) -> str | None:
        """A readable reason why this file is refused before decoding, or None."""
        return self._check(path)[0]

    def _too_long(self, duration: float | None) -> str:
        """The refusal of audio over the limit; `duration` None when the decoder stopped at the limit."""
        length = f"{duration:.1f} s" if duration is not None else f"over {format_seconds(self.limits.max_seconds)}"
        return (
            f"audio is too long ({length}); this Space scores clips up to "
            f"{format_seconds(self.limits.max_seconds)}. Cut it, or use the distill-mos command line tool, "
            "which has no limit"
        )

    def score_paths(self, paths: list[str]) -> list[FileScore]:
        """
        Scores files in order through the library's decode and scoring path, within the limits and in the request's
        lane (see `Lanes`). Warnings (silent, very short, truncated file) are the library's, worded as the command
        line tool words them.
        """
        checks = [self._check(path) for path in paths]
        lane = self.lanes.lane([duration for refused, duration in checks if not refused])
        try:
            with self.lanes.slot(lane):
                return self._score_checked(paths, checks)
        except Busy:
            reason = "the Space is busy (too many requests are waiting); please try again in a minute"
            return [FileScore(path=str(path), error=reason) for path in paths]

    def _score_checked(self, paths: list[str], checks: list[tuple[str | None, float | None]]) -> list[FileScore]:
        # the limit also holds while decoding (max_seconds): a header need not state a length (a streamed FLAC, webm)
        items = [Item.failed(path, refused) if refused else Item.file(path) for path, (refused, _) in zip(paths, checks)]
        results = list(self.scorer.score_items(items, max_seconds=self.limits.max_seconds))
        for path, result in zip(paths, results):
            if result.error_type:  # the network failed: the type only, internals stay in the server's log
                logger.warning("%s", result.error)
                result.error = f"scoring failed ({result.error_type}); please try again or a shorter clip"
            elif result.too_long:  # the decoder stopped at the limit: in the Space's words
                result.error = self._too_long(None)
            elif result.error:  # the decoder names the server's temporary path: show the file's own name instead
                result.error = result.error.replace(str(path), Path(path).name)
        return results

    def score_path(self, path: str) -> FileScore:
        return self.score_paths([path])[0]
