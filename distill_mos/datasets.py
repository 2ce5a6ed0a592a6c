"""Scoring Hugging Face `datasets` audio columns with `Dataset.map(batched=True)`."""

import numpy as np

from .audio import AudioFileError, decode_bytes, load_audio, select_channel
from .scorer import DistillMOSScorer


def example_waveform(audio, channel: str | int = "first") -> tuple[np.ndarray, int]:
    """
    One `Audio` value -> (mono waveform, sampling rate). Accepts undecoded `{"path", "bytes"}` values (decoded here
    exactly as the command line tool decodes files), datasets 5's torchcodec `AudioDecoder` (all channels decoded,
    then `channel` picked) and `{"array", "sampling_rate"}` dicts (a 2-D array is read as (channels, samples)).
    """
    if hasattr(audio, "get_all_samples"):
        samples = audio.get_all_samples()
        data, sampling_rate = samples.data.numpy(), int(samples.sample_rate)
    elif "array" in audio:
        data, sampling_rate = np.asarray(audio["array"]), audio["sampling_rate"]
    elif audio.get("bytes"):
        decoded = decode_bytes(audio["bytes"], name=audio.get("path") or "audio bytes", channel=channel)
        return decoded.waveform, decoded.sampling_rate
    elif audio.get("path"):
        decoded = load_audio(audio["path"], channel)
        return decoded.waveform, decoded.sampling_rate
    else:
        raise ValueError("the audio value has neither samples, bytes nor a path")
    if data.ndim == 2:
        data = select_channel(data, channel)
    return data, sampling_rate


def add_mos_column(
    dataset,
    scorer: DistillMOSScorer | None = None,
    audio_column: str = "audio",
    column: str = "mos",
    channel: str | int = "first",
    windows: bool = False,
    batch_size: int = 16,
    **map_kwargs,
):
    """
    Adds a `column` of predicted MOS (float, None where the audio could not be scored) and `<column>_error` (the
    reason, else None) to a `datasets.Dataset` with an `Audio` column at any sampling rate. With `windows=True` it
    also adds `<column>_window_scores` and `<column>_window_starts` (seconds).

        ds = load_dataset("audiofolder", data_dir="clips")["train"]
        ds = add_mos_column(ds)                      # ds["mos"]

    Extra keyword arguments go to `Dataset.map` (e.g. `num_proc`; with `num_proc > 1` call
    `torch.set_num_threads(1)` first: forked workers hang after the parent ran torch multithreaded).
    """
    scorer = scorer or DistillMOSScorer.from_pretrained()
    if audio_column not in dataset.column_names:
        raise ValueError(f"the dataset has no column {audio_column!r}; its columns are {dataset.column_names}.")

    def score_batch(batch):
        prepared, errors = [], []
        for audio in batch[audio_column]:
            try:
                waveform, sampling_rate = example_waveform(audio, channel)
                prepared.append(scorer.prepare(waveform, sampling_rate))
                errors.append(None)
            except AudioFileError as error:  # the row names its file already: keep the reason
                prepared.append(None)
                errors.append(error.reason)
            except Exception as error:  # noqa: BLE001 - a bad row must not lose the others' scores
                prepared.append(None)
                errors.append(str(error).replace("the clip ", "", 1))
        good = [i for i, w in enumerate(prepared) if w is not None]
        scores = {}
        for i, score in zip(good, scorer.score_prepared_each([prepared[i] for i in good]) if good else []):
            if isinstance(score, str):
                errors[i] = score
            else:
                scores[i] = score
        out = {
            column: [scores[i].mos if i in scores else None for i in range(len(prepared))],
            f"{column}_error": errors,
        }
        if windows:
            out[f"{column}_window_scores"] = [scores[i].window_scores if i in scores else None for i in range(len(prepared))]
            out[f"{column}_window_starts"] = [scores[i].window_starts if i in scores else None for i in range(len(prepared))]
        return out

    map_kwargs.setdefault("desc", "Distill-MOS")
    feature = dataset.features[audio_column]
    decodes_itself = getattr(feature, "decode", False) and type(feature).__name__ == "Audio"
    if decodes_itself:
        # Decode inside score_batch, row by row, so that one unreadable file cannot stop the whole map.
        from datasets import Audio

        dataset = dataset.cast_column(audio_column, Audio(decode=False))
    scored = dataset.map(score_batch, batched=True, batch_size=batch_size, **map_kwargs)
    if decodes_itself and audio_column in scored.column_names:  # unless map_kwargs removed it
        scored = scored.cast_column(audio_column, feature)
    return scored
