"""Distill-MOS as an `evaluate` measurement: the predicted MOS (1..5) of each clip of a list of audio, and their mean.

Load it offline from this folder (it needs this repository's `distill_mos` package, `pip install distill-mos-hf[evaluate]`):

    import evaluate
    mos = evaluate.load("eval/distill_mos", module_type="measurement")
    mos.compute(data=[waveform_a, waveform_b], sampling_rate=16000)      # arrays, one rate for all (or one per clip)
    mos.compute(data=dataset["audio"])                                    # a 🤗 datasets Audio column
"""

import math

import datasets
import evaluate
import numpy as np


from distill_mos.adapters import shared_scorer
from distill_mos.results import Item
from distill_mos.datasets import example_waveform

_CITATION = """\
@inproceedings{stahl2025distillmos,
  title={Distillation and Pruning for Scalable Self-Supervised Representation-Based Speech Quality Assessment},
  author={Stahl, Benjamin and Gamper, Hannes},
  booktitle={ICASSP},
  year={2025}
}
"""

_DESCRIPTION = """\
Distill-MOS predicts the mean opinion score (MOS, 1 = bad ... 5 = excellent) a listening test would give a mono
speech clip, without a reference. This measurement scores each clip exactly as the `distill-mos` command line tool
does (clips at any sampling rate are resampled to 16 kHz; float32, the original model's scores to 1e-4 MOS) and
reports the scores and their mean. For corpora, score a dataset column with `distill_mos.add_mos_column` instead:
`evaluate` writes every input sample to an Arrow cache file before computing.
"""

_KWARGS_DESCRIPTION = """
Args:
    data (`list`): the clips. Each is a 1-D array (numpy, torch or list) of samples at `sampling_rate`, a
        `{"array", "sampling_rate"}` dict, or a value of a 🤗 datasets `Audio` column (datasets 5's `AudioDecoder`,
        or `{"path", "bytes"}` when not decoded). Multi-channel audio: its first channel, as the command line tool.
    sampling_rate (`int` or `list` of `int`, optional): in Hz, one for all array clips or one per clip; needed
        only for bare arrays.
    model (`str`, optional): model folder or Hub id (default: this repository, or `$DISTILL_MOS_MODEL`).
    device (`str`, optional): "cpu", "cuda" or "auto" (the default: CUDA when there is one).
    dtype (`str`, optional): "float32" (the default, exact), "bfloat16", "float16" or "auto".
Returns:
    mos (`list` of `float` or `None`): each clip's MOS, in input order; None for a clip that cannot be scored.
    mean_mos (`float`): the mean over the scored clips (NaN if there is none).
    errors (`list` of `str` or `None`): why a clip has no score (None for the scored ones).
    warnings (`list` of `str` or `None`): a note on a scored clip whose score says little (silent audio).
Examples:
    >>> mos = evaluate.load("eval/distill_mos", module_type="measurement")
    >>> result = mos.compute(data=[np.zeros(16000, dtype=np.float32) + 0.1], sampling_rate=16000)
    >>> sorted(result)
    ['errors', 'mean_mos', 'mos', 'warnings']
"""


def _as_audio_dicts(data, sampling_rate) -> list[dict]:
    """Any accepted clip -> {"array": float32 (samples,), "sampling_rate": int}, what the Arrow features hold."""
    if sampling_rate is None or isinstance(sampling_rate, (int, np.integer)):
        rates = [sampling_rate] * len(data)
    else:
        rates = list(sampling_rate)
        if len(rates) != len(data):
            raise ValueError(f"got {len(data)} clips but {len(rates)} sampling rates.")
    clips = []
    for index, (clip, rate) in enumerate(zip(data, rates)):
        if isinstance(clip, dict) or hasattr(clip, "get_all_samples"):  # an Audio column's value
            array, rate = example_waveform(clip)
        elif rate is None:
            raise ValueError(f"clip {index} is an array: pass sampling_rate= (one int for all clips, or one per clip).")
        else:
            array = clip.detach().cpu().numpy() if hasattr(clip, "detach") else np.asarray(clip)
        clips.append({"array": np.asarray(array, dtype=np.float32), "sampling_rate": int(rate)})
    return clips


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DistillMos(evaluate.Measurement):
    def _info(self):
        return evaluate.MeasurementInfo(
            module_type="measurement",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"data": {"array": datasets.List(datasets.Value("float32")), "sampling_rate": datasets.Value("int64")}}
            ),
            reference_urls=["https://arxiv.org/abs/2502.05356"],
        )

    def compute(self, *, data=None, sampling_rate=None, **kwargs):
        """
        As `evaluate`'s `compute`, after turning every accepted clip into the `{"array", "sampling_rate"}` input
        (`add` and `add_batch` take that form only: `add_batch(data=[{"array": x, "sampling_rate": 16000}])`).
        """
        if data is not None:
            data = _as_audio_dicts(data, sampling_rate)
        return super().compute(data=data, **kwargs)

    def _compute(self, data, model=None, device="auto", dtype="float32"):
        scorer = shared_scorer(model, device, dtype)
        items = [Item.array(clip["array"], clip["sampling_rate"], f"clip {index}") for index, clip in enumerate(data)]
        results = list(scorer.score_items(items))
        scored = [r.mos for r in results if r.mos is not None]
        return {
            "mos": [r.mos for r in results],
            "mean_mos": float(np.mean(scored)) if scored else math.nan,
            "errors": [r.error for r in results],
            "warnings": [r.warning for r in results],
        }
