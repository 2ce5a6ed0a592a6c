"""
How Distill-MOS runs: the one module that decides device, precision (dtype or float16 autocast), the CUDA TF32 policy,
the CPU per-core window workers, how many windows go through the network at once, the ONNX backend, and how many
threads decode audio ahead of the model.

The model file keeps the network, the windowing and one plain default path (exact on every device, as a Hub user
without this package gets it); `Execution` picks the fast paths around it, as transformers picks an attention
implementation from the config. `DistillMOSScorer` (the one scoring path of the CLI, the API, `add_mos_column`, Ray
and the Space) holds one `Execution` and asks it for everything in this list.
"""

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .columns import DTYPE_NAMES as _DTYPE_NAMES

# What `dtype=` accepts besides a torch.dtype; "auto" picks by hardware (see `resolve_dtype`).
DTYPE_NAMES = dict(zip(_DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16)))
# Windows per network call on a GPU: large enough to fill an H200 (871 windows/s in float32 at 64, measured in
# bench/results/gpu_h200.json), small enough for 1.5 MB x 64 of activations per layer.
GPU_WINDOW_BATCH = 64


def cpu_count() -> int:
    """CPUs this process may run on (a container's or Ray's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512_BF16 or AMX), as torch reads them from cpuid."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """
    `dtype` ("float32", "bfloat16", "float16", "auto", a torch.dtype, or None for float32) -> the dtype to load the
    model in. "auto": bfloat16 on CPUs with native bfloat16, float16 on CUDA GPUs with tensor cores (compute capability
    7.0 or newer), float32 otherwise. float32 is the exact setting (the original's scores to 1e-4).
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPE_NAMES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)} or auto, got {dtype}.")
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16 if torch.cuda.get_device_capability(device) >= (7, 0) else torch.float32
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)} or auto, got {dtype!r}.")
    return DTYPE_NAMES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto.")
    return device


@dataclass
class Execution:
    """
    How one scorer runs its model.

    Args:
        half: float16 autocast on CUDA (convolutions and matmuls in half, norms and softmax in float32); kept for
            compatibility: loading the model in float16 (`dtype="float16"`) runs the whole network in float16.
        allow_tf32: CUDA float32 only. False (default) keeps cuDNN's TF32 off inside the network: exact, as the
            original's scores to 1e-4; True is ~3x faster on Ampere and newer but moved scores by up to 8.8e-4.
        cpu_window_workers: on CPU, score one window per core on this many single-threaded workers (None: one per
            torch thread; 1: every thread on each window in turn, the model's plain path).
        window_batch_size: windows per network call (None: one per worker on CPU, `GPU_WINDOW_BATCH` on GPU).
        window_scorer: replaces the network on windows (an ONNX Runtime session, see `distill_mos.onnx_backend`).
        decode_workers: threads that decode and resample files ahead of the model (None: more on a GPU machine,
            where the device waits for them, than on CPU, where they compete with the model for the cores).
    """

    half: bool = False
    allow_tf32: bool = False
    cpu_window_workers: int | None = None
    window_batch_size: int | None = None
    window_scorer: Callable[[torch.Tensor], torch.Tensor] | None = None
    decode_workers: int | None = None

    @property
    def backend(self) -> str:
        """What scores the windows: "torch" (the model), "onnx" (ONNX Runtime) or "custom" (another window scorer)."""
        if self.window_scorer is None:
            return "torch"
        # by name: onnxruntime stays an optional dependency, never imported to ask
        return "onnx" if type(self.window_scorer).__name__ == "OnnxWindowScorer" else "custom"

    def prepare(self, model) -> None:
        """
        Puts the model in inference mode and gives it this policy: its TF32 setting, and on CPU the per-core window
        executor (the model reads both per call).
        """
        if self.half and model.device.type != "cuda":
            raise ValueError("half precision (half=True, --half) needs the model on a CUDA GPU.")
        model.eval()
        model.allow_tf32 = self.allow_tf32
        workers = self.workers(model.device)
        if self.window_scorer is None:  # a window scorer (ONNX) replaces the model's windows path altogether
            model.window_executor = PerCoreWindowExecutor(workers) if workers > 1 else None

    def context(self, device: torch.device):
        """What every model call runs under: inference mode, and float16 autocast for `half`."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.half:
            stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
        return stack

    def workers(self, device: torch.device) -> int:
        """Single-threaded CPU window workers for one call (1: none, the model's own multi-threaded path)."""
        if device.type != "cpu" or self.window_scorer is not None:
            return 1
        return max(1, self.cpu_window_workers or torch.get_num_threads())

    def forward_options(self, model) -> dict:
        """Keyword arguments of `model(...)` that carry this policy: the window scorer and windows per call."""
        batch = self.window_batch_size or (self.workers(model.device) if model.device.type == "cpu" else GPU_WINDOW_BATCH)
        return {"window_scorer": self.window_scorer, "window_batch_size": batch}

    def default_decode_workers(self, device: torch.device) -> int:
        if self.decode_workers is not None:
            return max(1, self.decode_workers)
        # On CPU the model already uses every core: one thread decodes the next batch meanwhile. A GPU waits for
        # decoding instead, so all but one core (for the driver thread) decode.
        return 1 if device.type == "cpu" else max(1, min(8, cpu_count() - 1))


class PerCoreWindowExecutor:
    """
    Runs the windows of a chunk one per core on `workers` single-threaded threads (the model's `window_executor`):
    on CPU this is faster than every core on each window in turn (a window's convolutions already fill a core, the
    per-core working set stays in cache, and no core waits at the barriers of a multi-threaded op, costly when the
    machine is shared). Whole rounds of one window per worker run side by side, each with its own real length (so
    each skips its own padding); the remainder (fewer windows than workers) runs on all threads at once.
    """

    def __init__(self, workers: int):
        self.workers = workers

    def __call__(self, score: Callable, windows: torch.Tensor, real_samples: list[int] | None) -> torch.Tensor:
        parallel = windows.shape[0] - windows.shape[0] % self.workers
        lengths = [None] * windows.shape[0] if real_samples is None else list(real_samples)
        if parallel == 0:
            return score(windows, real_samples)
        inference = torch.is_inference_mode_enabled()

        def run(index: int) -> torch.Tensor:
            with torch.inference_mode(inference), torch.no_grad():
                return score(windows[index : index + 1], None if lengths[index] is None else [lengths[index]])

        scores = torch.cat(list(single_threaded_pool(self.workers).map(run, range(parallel))))
        if parallel < windows.shape[0]:
            rest = None if real_samples is None else lengths[parallel:]
            scores = torch.cat([scores, score(windows[parallel:], rest)])
        return scores


_SINGLE_THREADED_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def single_threaded_pool(workers: int) -> ThreadPoolExecutor:
    """
    A long-lived pool of `workers` threads that each run torch ops on one intra-op thread.

    `torch.set_num_threads` also changes the default that threads started meanwhile inherit, so it is called once per
    worker here, while all workers start together under a lock, and the caller's setting is restored right after:
    other threads (request handlers, decoders) never see the single-threaded setting.
    """
    with _POOLS_LOCK:
        pool = _SINGLE_THREADED_POOLS.get(workers)
        if pool is None:
            threads = torch.get_num_threads()
            started = threading.Barrier(workers)

            def single_threaded() -> None:
                torch.set_num_threads(1)
                started.wait()  # every worker is its own thread: none is reused before all have started

            pool = ThreadPoolExecutor(workers, thread_name_prefix="distill-mos-window", initializer=single_threaded)
            for future in [pool.submit(lambda: None) for _ in range(workers)]:
                future.result()
            torch.set_num_threads(threads)
            _SINGLE_THREADED_POOLS[workers] = pool
        return pool


def ordered_map(function: Callable, items: Iterable, workers: int, max_pending: int) -> Iterator:
    """
    `map(function, items)` on `workers` threads, in input order, with at most `max_pending` results computed ahead of
    the consumer: memory stays bounded on a million inputs however slow the consumer (the model) is.
    """
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="distill-mos-decode") as pool:
        pending = deque()
        for item in iterator:
            pending.append(pool.submit(function, item))
            if len(pending) >= max_pending:
                break
        while pending:
            result = pending.popleft().result()
            for item in iterator:  # refill one for the one taken
                pending.append(pool.submit(function, item))
                break
            yield result


__all__ = [
    "DTYPE_NAMES",
    "Execution",
    "PerCoreWindowExecutor",
    "cpu_count",
    "cpu_has_native_bf16",
    "ordered_map",
    "resolve_device",
    "resolve_dtype",
]
