"""
`distill_mos.torchmetrics.DistillMOS` (issue 21.1): the mean of the scorer's scores on the bundled clips, the same
batched or one clip at a time, at 48 kHz, under `torch.no_grad`, and the same mean from two `gloo` processes as from
one. Clips are cut to 4 s (one window each) to keep the file fast.
"""

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import GENSPEECH, TCDVOIP, require_module

require_module("torchmetrics", "the torchmetrics extra (in the test extra)")

from distill_mos.torchmetrics import DistillMOS  # noqa: E402

SAME_ROUTE = 1e-5  # MOS: our score by another route (conftest's class)
SECONDS = 4


def clips(folder, count: int) -> tuple[torch.Tensor, int]:
    """`count` bundled clips of `folder`, cut to SECONDS: ((count, samples) float32, sampling rate)."""
    paths = sorted(folder.glob("audio/**/*.wav"))[:count]
    rate = sf.info(paths[0]).samplerate
    return torch.stack([torch.from_numpy(sf.read(p, dtype="float32", frames=SECONDS * rate)[0]) for p in paths]), rate


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    waveforms, rate = clips(GENSPEECH, 4)
    assert rate == 16000
    return waveforms


@pytest.fixture(scope="module")
def expected(scorer, speech) -> list[float]:
    return [s.mos for s in scorer.score_arrays(list(speech.numpy()), 16000)]


def test_conventions_of_torchmetrics_dnsmos():
    assert (DistillMOS.full_state_update, DistillMOS.is_differentiable, DistillMOS.higher_is_better) == (False, False, True)
    metric = DistillMOS(fs=16000)
    assert set(metric._defaults) == {"sum_mos", "total"}
    assert all(metric._reductions[name] is not None for name in ("sum_mos", "total"))  # dist_reduce_fx="sum"
    with pytest.raises(ValueError, match="fs"):
        DistillMOS(fs=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., time\)"):
        metric.update(torch.zeros(2, 0))


def test_equals_the_scorer_on_the_bundled_clips(speech, expected):
    metric = DistillMOS(fs=16000, device="cpu")
    batch = speech.reshape(2, 2, -1)  # (..., time): every leading index is a clip
    assert float(metric(batch[0])) == pytest.approx(np.mean(expected[:2]), abs=SAME_ROUTE)  # forward: the batch's mean
    metric.update(batch[1])
    assert int(metric.total) == 4
    assert float(metric.compute()) == pytest.approx(np.mean(expected), abs=SAME_ROUTE)


def test_batched_equals_one_by_one(speech, expected):
    batched, single = DistillMOS(fs=16000), DistillMOS(fs=16000)
    batched.update(speech.reshape(2, 2, -1))
    for clip in speech:
        single.update(clip)  # (time,): one clip
    assert float(batched.compute()) == pytest.approx(float(single.compute()), abs=SAME_ROUTE)
    assert float(single.compute()) == pytest.approx(np.mean(expected), abs=SAME_ROUTE)
    single.reset()
    single.update(speech[3])
    assert float(single.compute()) == pytest.approx(expected[3], abs=SAME_ROUTE)


def test_48_khz_input_is_resampled_as_the_scorer_does(scorer):
    waveforms, rate = clips(TCDVOIP, 2)
    assert rate == 48000
    metric = DistillMOS(fs=48000)
    metric.update(waveforms)
    want = np.mean([s.mos for s in scorer.score_arrays(list(waveforms.numpy()), 48000)])
    assert float(metric.compute()) == pytest.approx(want, abs=SAME_ROUTE)


def test_under_no_grad_with_an_input_that_requires_grad(speech, expected):
    # as in a Lightning validation step: no_grad outside, the waveforms may come out of a network with grad
    enhanced = speech[:2].clone().requires_grad_(True)
    metric = DistillMOS(fs=16000)
    with torch.no_grad():
        value = metric(enhanced * 1.0)
    assert float(value) == pytest.approx(np.mean(expected[:2]), abs=SAME_ROUTE)
    metric.update(enhanced)  # grad on: detached inside, never a graph through the metric
    assert not metric.compute().requires_grad


def _distributed_worker(rank: int, world_size: int, port: int, waveforms: torch.Tensor, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        metric = DistillMOS(fs=16000)
        metric.update(waveforms[rank::world_size])  # each process sees half of the clips
        value = float(metric.compute())  # synced: the mean over both processes' clips
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(value))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_give_the_one_process_mean(speech, expected, tmp_path):
    # 3 clips: the processes hold unequal counts (2 and 1), so a mean of means would differ from the mean
    waveforms = speech[:3]
    torch.multiprocessing.spawn(_distributed_worker, args=(2, _free_port(), waveforms, str(tmp_path)), nprocs=2, join=True)
    results = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)}
    one_process = DistillMOS(fs=16000)
    one_process.update(waveforms)
    assert results[0] == pytest.approx(float(one_process.compute()), abs=SAME_ROUTE)
    assert results[1] == pytest.approx(results[0], abs=1e-12)  # every rank gets the synced value
    assert results[0] == pytest.approx(np.mean(expected[:3]), abs=SAME_ROUTE)
    assert abs(np.mean(expected[:3]) - np.mean([np.mean(expected[0:3:2]), expected[1]])) > 1e-3  # the check can fail
