"""Distill-MOS for the Hugging Face ecosystem: score speech quality (MOS 1..5) of arrays, files and datasets."""

from .audio import AUDIO_SUFFIXES, AudioFileError, DecodedAudio, load_audio
from .scorer import DistillMOSScorer, FileScore, Score, default_model_location

__all__ = [
    "AUDIO_SUFFIXES",
    "AudioFileError",
    "DecodedAudio",
    "DistillMOSScorer",
    "FileScore",
    "Score",
    "add_mos_column",
    "default_model_location",
    "load_audio",
]
__version__ = "1.0.0"


def add_mos_column(*args, **kwargs):
    """See `distill_mos.datasets.add_mos_column` (imported lazily: `datasets` is heavy)."""
    from .datasets import add_mos_column as _add_mos_column

    return _add_mos_column(*args, **kwargs)
