"""
The names every interface shares, importable without torch (the command line tool's `--help` must stay fast): the
output columns of the CLI, Ray and the Space's CSV, and the precision names `--dtype` / `dtype=` accept.
"""

# One row per input: what `distill-mos` writes, Ray's `score_files_with_ray` yields, and the Space's CSV holds.
COLUMNS = ["file", "mos", "duration_s", "sampling_rate", "channels", "error", "warning"]
# With --windows / windows=True: each window's score and its start in seconds (the model's `window_start_times`).
WINDOW_COLUMNS = ["window_scores", "window_start_times"]
# With --checks / checks=True: the input checks (distill_mos.checks.InputChecks.columns()).
CHECK_COLUMNS = ["speech_share", "loudness_lufs", "clipped_share", "bandwidth_hz"]
# With a calibrated model (distill-mos calibrate): the interval around `mos`.
INTERVAL_COLUMNS = ["mos_low", "mos_high"]
# `dtype=` names; "auto" picks by hardware (distill_mos.scorer.resolve_dtype).
DTYPE_NAMES = ["float32", "bfloat16", "float16"]
DTYPE_CHOICES = [*DTYPE_NAMES, "auto"]

__all__ = ["CHECK_COLUMNS", "COLUMNS", "DTYPE_CHOICES", "DTYPE_NAMES", "INTERVAL_COLUMNS", "WINDOW_COLUMNS"]
