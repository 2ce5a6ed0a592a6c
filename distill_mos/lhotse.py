"""
Distill-MOS for Lhotse: annotate a `CutSet` with each cut's MOS, as Lhotse's DNSMOS workflow
(`lhotse.workflows.annotate_dnsmos`) annotates cuts with theirs, in `cut.custom`.

    from lhotse import CutSet
    from distill_mos.lhotse import score_cuts
    cuts = score_cuts(CutSet.from_jsonl_lazy("cuts.jsonl.gz"))
    cuts.filter(lambda cut: cut.custom["mos"] >= 3.5).to_jsonl("good_cuts.jsonl.gz")   # scored while written

Each cut is scored on its own span (`cut.load_audio()`: a cut that is part of a longer recording gets the score of
that part), through `DistillMOSScorer`'s one scoring path, so it gets the score the command line tool gives the same
samples. Needs `lhotse` (`pip install distill-mos-hf[lhotse]`).
"""

import copy
import itertools
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from lhotse import CutSet
from lhotse.cut import Cut, MixedCut
from lhotse.utils import fastcopy

from .adapters import shared_scorer
from .audio import select_channel
from .results import Item
from .scorer import DistillMOSScorer

logger = logging.getLogger(__name__)


def score_cuts(
    cuts: CutSet,
    scorer: DistillMOSScorer | None = None,
    key: str = "mos",
    num_workers: int = 2,
    channel: str | int = "first",
) -> CutSet:
    """
    `cuts` with `custom[key]` set to each cut's MOS (1..5), as a new `CutSet` (the input's cuts are not modified).

    Like `CutSet.map`, a lazy `CutSet` gives a lazy one, scored while it is iterated (written, filtered, sampled); an
    eager one is scored at once. `num_workers` threads load the audio of the next cuts while the model scores the
    current `scorer.batch_size` of them.

    A cut that cannot be scored (unreadable audio, an invalid signal) gets `custom[key] = None` and the reason in
    `custom[key + "_error"]`; the other cuts are scored as usual. A silent cut is scored and gets
    `custom[key + "_warning"]`.

    Args:
        cuts: the cuts (any kind: `MonoCut`, `MultiCut`, `MixedCut`), at any sampling rate.
        scorer: a `DistillMOSScorer` (default: this process's shared float32 scorer, on CUDA when there is one).
        key: the custom field to write.
        num_workers: threads loading audio.
        channel: for multi-channel cuts: "first" (as the command line tool), "mean", or a 0-based index.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}.")
    scored = CutSet(_ScoredCuts(cuts.data, scorer or shared_scorer(), key, num_workers, channel))
    return scored if cuts.is_lazy else scored.to_eager()


class _ScoredCuts:
    """The lazy iterable behind `score_cuts`: cuts in, annotated copies out, in input order."""

    def __init__(self, cuts: Iterable[Cut], scorer: DistillMOSScorer, key: str, num_workers: int, channel):
        self.cuts, self.scorer, self.key, self.num_workers, self.channel = cuts, scorer, key, num_workers, channel

    def __len__(self) -> int:
        return len(self.cuts)

    def __iter__(self) -> Iterator[Cut]:
        batch_size = self.scorer.batch_size
        cuts = iter(self.cuts)
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="distill-mos-lhotse") as pool:
            # at most two batches in flight: loading runs ahead of the model, memory stays bounded on any CutSet
            pending: deque[tuple[Cut, Future]] = deque(
                (cut, pool.submit(self._load, cut)) for cut in itertools.islice(cuts, 2 * batch_size)
            )
            while pending:
                batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                pending.extend((cut, pool.submit(self._load, cut)) for cut in itertools.islice(cuts, batch_size))
                yield from self._score([(cut, future.result()) for cut, future in batch])

    def _load(self, cut: Cut) -> Item:
        """The cut's own span as an `Item` of the scorer (samples at cut.sampling_rate), or why it cannot be loaded."""
        try:
            audio = cut.load_audio()  # (channels, samples) of the cut's own span, at cut.sampling_rate
            return Item.array(select_channel(np.atleast_2d(audio), self.channel), cut.sampling_rate, f"cut {cut.id}")
        except Exception as error:  # noqa: BLE001 - whatever a Lhotse audio backend raises stays this cut's problem
            return Item.failed(f"cut {cut.id}", f"audio could not be loaded: {_reason(error)}")

    def _score(self, loaded: list[tuple[Cut, Item]]) -> Iterator[Cut]:
        results = self.scorer.score_items([item for _, item in loaded])
        for (cut, _), result in zip(loaded, results):
            if result.error is not None:
                logger.warning("Distill-MOS: cut %s: %s", cut.id, result.error)
                fields = {self.key: None, f"{self.key}_error": result.error}
            else:
                fields = {self.key: result.mos}
                if result.warning:
                    fields[f"{self.key}_warning"] = result.warning
            yield _with_custom(cut, fields)


def _reason(error: Exception) -> str:
    """One line for a loading failure (Lhotse's AudioLoadingError lists every backend's attempt, traces included)."""
    text = str(error).strip()
    line = text.splitlines()[0].removesuffix(" Details:") if text else type(error).__name__
    return f"{line} (no such file)" if "No such file or directory" in text else line


def _with_custom(cut: Cut, fields: dict) -> Cut:
    """A copy of `cut` with `fields` added to its custom fields."""
    if isinstance(cut, MixedCut):
        cut = copy.deepcopy(cut)  # a MixedCut keeps its custom fields on its first non-padding track's cut
        target = cut._first_non_padding_cut
    else:
        target = cut = fastcopy(cut)
    target.custom = {**(target.custom or {}), **fields}
    return cut


__all__ = ["score_cuts"]
