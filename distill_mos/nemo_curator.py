"""
Distill-MOS as a NeMo Curator audio stage, in the shape of its UTMOS and SIGMOS filter stages
(`nemo_curator.stages.audio.filtering`): annotates each `AudioTask` with `distill_mos` (MOS 1..5) and drops those
below `mos_threshold`.

    from nemo_curator.pipeline import Pipeline
    from nemo_curator.stages.resources import Resources
    from distill_mos.nemo_curator import DistillMOSFilterStage

    pipeline = Pipeline(name="quality_pipeline")
    pipeline.add_stage(DistillMOSFilterStage(mos_threshold=3.5).with_(resources=Resources(cpus=1.0, gpus=0.25)))

A task's audio is its `waveform` (+ `sample_rate`) or its `audio_filepath` (decoded as the `distill-mos` command line
tool decodes files); with a `segments` list (after VAD), each segment is scored and filtered on its own. The tasks of
a batch are scored together by `DistillMOSScorer`, the library's one scoring path. Needs `nemo-curator`
(`pip install distill-mos-hf[nemo-curator]`).
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from loguru import logger
from nemo_curator.backends.base import WorkerMetadata
from nemo_curator.stages.base import ProcessingStage
from nemo_curator.stages.resources import Resources
from nemo_curator.tasks import AudioTask

from .audio import select_channel
from .results import Item
from .scorer import DistillMOSScorer


@dataclass
class DistillMOSFilterStage(ProcessingStage[AudioTask, AudioTask]):
    """
    Distill-MOS quality annotation and filter stage.

    Args:
        mos_threshold: keep items whose MOS is at least this (None: keep every item, annotate only; an item that
            cannot be scored is then kept with `distill_mos` None and the reason in `distill_mos_error`).
        model: model folder or Hub id (default: `distill_mos.default_model_location()`).
        dtype: "float32" (exact), "bfloat16", "float16" or "auto".
        channel: for multi-channel audio: "first" (as the command line tool), "mean", or a 0-based index.
        batch_size: tasks scored together.

    The model runs on the GPU the executor assigns (`.with_(resources=Resources(gpus=X))`), else on the CPU.
    """

    mos_threshold: float | None = 3.5
    model: str | None = None
    dtype: str = "float32"
    channel: str | int = "first"

    name: str = "DistillMOSFilter"
    batch_size: int = 8
    resources: Resources = field(default_factory=lambda: Resources(cpus=1.0))

    def __post_init__(self):
        super().__init__()
        self._scorer: DistillMOSScorer | None = None

    def inputs(self) -> tuple[list[str], list[str]]:
        return [], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return [], ["distill_mos"]

    def setup(self, _: WorkerMetadata | None = None) -> None:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        self._scorer = DistillMOSScorer.from_pretrained(self.model, device=device, dtype=self.dtype)

    def teardown(self) -> None:
        self._scorer = None

    def process(self, task: AudioTask) -> AudioTask | list[AudioTask]:
        return self.process_batch([task])

    def process_batch(self, tasks: list[AudioTask]) -> list[AudioTask]:
        """Scores the items of `tasks` (tasks, or their segments) together; returns the tasks that pass."""
        if self._scorer is None:
            self.setup()
        items = [(t, seg) for t in tasks for seg in (t.data["segments"] if "segments" in t.data else [t.data])]
        names = [f"[{t.task_id}] " + _item_name(item) for t, item in items]
        results = self._scorer.score_items([self._item(item, name) for (_, item), name in zip(items, names)], self.channel)
        kept: dict[int, list[dict]] = {id(t): [] for t in tasks}
        for (task, item), name, result in zip(items, names, results):
            if result.error is not None:
                logger.error(f"Distill-MOS: {name}: {result.error}")
                if self.mos_threshold is None:
                    item["distill_mos"], item["distill_mos_error"] = None, f"{name}: {result.error}"
                    kept[id(task)].append(item)
                continue
            item["distill_mos"] = result.mos
            if self.mos_threshold is not None and result.mos < self.mos_threshold:
                logger.info(f"Distill-MOS FAILED: {name} MOS {result.mos:.3f} < {self.mos_threshold}")
                continue
            kept[id(task)].append(item)
        survivors = []
        for task in tasks:
            if "segments" in task.data:
                task.data["segments"] = kept[id(task)]
            if kept[id(task)]:
                survivors.append(task)
        return survivors

    def _item(self, item: dict, name: str) -> Item:
        """The task item's audio as an `Item` of the scorer (its samples, or its file), or why it has none."""
        waveform, rate = item.get("waveform"), item.get("sample_rate")
        if waveform is not None:
            if rate is None:
                return Item.failed(name, "'waveform' without 'sample_rate'")
            audio = waveform.detach().cpu().numpy() if torch.is_tensor(waveform) else np.asarray(waveform)
            try:
                return Item.array(select_channel(np.atleast_2d(audio), self.channel), rate, name)
            except ValueError as error:  # a channel index the audio does not have
                return Item.failed(name, str(error))
        if item.get("audio_filepath"):
            return Item.file(item["audio_filepath"])
        return Item.failed(name, "neither 'waveform' + 'sample_rate' nor 'audio_filepath'")


def _item_name(item: dict) -> str:
    return str(item.get("audio_filepath") or "waveform")


__all__ = ["DistillMOSFilterStage"]
