"""
The Space's settings: its limits and how the model is loaded, from environment variables (all optional).

    DISTILL_MOS_SPACE_MODEL   model folder or Hub id (else $DISTILL_MOS_MODEL, else this checkout, else the Hub)
    DISTILL_MOS_DEVICE        cpu, cuda or auto (default auto)
    DISTILL_MOS_MAX_SECONDS   longest clip scored, in seconds (default 600)
    DISTILL_MOS_MAX_UPLOAD_MB largest file accepted, in MB (default 50)
    DISTILL_MOS_MAX_FILES     files per request on the "Several files" tab (default 20)
    DISTILL_MOS_CONCURRENCY   requests scored at the same time (default 2)
    DISTILL_MOS_SHORT_SECONDS requests of at most this much audio in all (by the files' headers) are "short" (default 30)
    DISTILL_MOS_SHORT_CONCURRENCY  short requests scored at the same time, in slots of their own (default 1): a short
                              request never waits behind long ones
    DISTILL_MOS_QUEUE_SIZE    requests allowed to wait (default 32); more are refused with a message
    DISTILL_MOS_LIVE_SESSIONS live microphone sessions at the same time (default 2); more are refused with a message
    DISTILL_MOS_LIVE_SECONDS  longest live session, in seconds (default 300)
    DISTILL_MOS_LIVE_HOP      seconds between live updates (default 1)
    DISTILL_MOS_WINDOW_HOP    seconds between windows on long clips (default: exact, 1 s, as the library)
    DISTILL_MOS_DTYPE         float32 (default), bfloat16, float16 or auto: the precision the model scores in
    DISTILL_MOS_CHECKS        1 (default) or 0: the input checks (speech share, loudness, clipping, bandwidth) on
                              every upload, as columns of the answer and warnings in words
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT   where to listen (default 127.0.0.1:7860; Spaces sets 0.0.0.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from configuration_distillmos import DistillMOSConfig
from distill_mos import DistillMOSScorer
from distill_mos.columns import DTYPE_NAMES

MODEL_ID = "distill-mos/distill-mos-v7"
WINDOW_SECONDS = DistillMOSConfig().window_seconds  # 7.68 s, from the model's configuration
DTYPES = (*DTYPE_NAMES, "auto")  # what DistillMOSScorer.from_pretrained(dtype=...) takes


def _env_number(name: str, default: float, kind=float, minimum: float = 0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value <= minimum:
        raise ValueError(f"{name} must be more than {minimum}, got {raw!r}")
    return value


def format_seconds(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class Limits:
    """What one request (or one live session) may ask of a shared Space."""

    max_seconds: float = 600.0
    max_upload_mb: float = 50.0
    max_files: int = 20
    concurrency: int = 2
    queue_size: int = 32
    short_seconds: float = 30.0
    short_concurrency: int = 1
    live_sessions: int = 2
    live_seconds: float = 300.0
    live_hop: float = 1.0

    @classmethod
    def from_env(cls) -> "Limits":
        def whole(name, default):
            return int(_env_number(name, default, int))

        return cls(
            max_seconds=_env_number("DISTILL_MOS_MAX_SECONDS", cls.max_seconds),
            max_upload_mb=_env_number("DISTILL_MOS_MAX_UPLOAD_MB", cls.max_upload_mb),
            max_files=whole("DISTILL_MOS_MAX_FILES", cls.max_files),
            concurrency=whole("DISTILL_MOS_CONCURRENCY", cls.concurrency),
            queue_size=whole("DISTILL_MOS_QUEUE_SIZE", cls.queue_size),
            short_seconds=_env_number("DISTILL_MOS_SHORT_SECONDS", cls.short_seconds),
            short_concurrency=whole("DISTILL_MOS_SHORT_CONCURRENCY", cls.short_concurrency),
            live_sessions=whole("DISTILL_MOS_LIVE_SESSIONS", cls.live_sessions),
            live_seconds=_env_number("DISTILL_MOS_LIVE_SECONDS", cls.live_seconds),
            live_hop=_env_number("DISTILL_MOS_LIVE_HOP", cls.live_hop),
        )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def worker_threads(self) -> int:
        """Gradio worker threads: every request that may run or wait, and every live session, gets one."""
        return self.concurrency + self.short_concurrency + self.queue_size + self.live_sessions + 8

    def describe(self) -> str:
        return (
            f"up to {format_seconds(self.max_seconds)} of audio and {self.max_upload_mb:g} MB per file, "
            f"{self.max_files} files per request, {self.concurrency} request(s) scored at a time "
            f"(and {self.short_concurrency} more for requests of up to {format_seconds(self.short_seconds)} of audio), "
            f"{self.live_sessions} live session(s) of up to {format_seconds(self.live_seconds)}"
        )


def scorer_kwargs() -> dict:
    """`DistillMOSScorer.from_pretrained` keyword arguments from the environment (see the module docstring)."""
    hop = os.environ.get("DISTILL_MOS_WINDOW_HOP", "").strip()
    kwargs = {
        "device": os.environ.get("DISTILL_MOS_DEVICE", "auto"),
        "window_hop": float(hop) if hop else None,
        # on by default here (uploads are anyone's audio); off by default in the library, where it costs ~8%
        "checks": os.environ.get("DISTILL_MOS_CHECKS", "1").strip() != "0",
    }
    dtype = os.environ.get("DISTILL_MOS_DTYPE", "").strip().lower()
    if dtype:  # passed only when set: the library's default precision is float32
        if dtype not in DTYPES:
            raise ValueError(f"DISTILL_MOS_DTYPE must be one of {', '.join(DTYPES)}, got {dtype!r}")
        kwargs["dtype"] = dtype
    return kwargs


def load_scorer() -> DistillMOSScorer:
    """The model from $DISTILL_MOS_SPACE_MODEL, else the library's default (env, checkout, installed copy, Hub)."""
    return DistillMOSScorer.from_pretrained(os.environ.get("DISTILL_MOS_SPACE_MODEL") or None, **scorer_kwargs())
