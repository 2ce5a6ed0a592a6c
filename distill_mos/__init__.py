"""Distill-MOS for the Hugging Face ecosystem: score speech quality (MOS 1..5) of arrays, files and datasets."""

import importlib

from .audio import AUDIO_SUFFIXES, AudioFileError, AudioTooLongError, DecodedAudio, load_audio

# torch and transformers load on first use of these names, so that `distill-mos --help` answers at once.
_LAZY = {name: ".scorer" for name in ("DistillMOSScorer", "default_model_location")}
_LAZY.update({name: ".results" for name in ("FileScore", "Item", "Score")})
_LAZY["StreamScorer"] = ".stream"

__all__ = [
    "AUDIO_SUFFIXES",
    "AudioFileError",
    "AudioTooLongError",
    "DecodedAudio",
    "DistillMOSScorer",
    "FileScore",
    "Item",
    "Score",
    "StreamScorer",
    "add_mos_column",
    "default_model_location",
    "load_audio",
    "report",
]
__version__ = "1.0.0"


def add_mos_column(*args, **kwargs):
    """See `distill_mos.datasets.add_mos_column` (imported lazily: `datasets` is heavy)."""
    from .datasets import add_mos_column as _add_mos_column

    return _add_mos_column(*args, **kwargs)


def report(*args, **kwargs):
    """See `distill_mos.corpus_report.report`: a corpus report as data (imported lazily: pandas, matplotlib)."""
    from .corpus_report import report as _report

    return _report(*args, **kwargs)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
