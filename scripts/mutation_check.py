#!/usr/bin/env python
"""
Mutation check: do the tests catch small, plausible bugs in the places users depend on?

Each mutation below is an exact text replacement in one file. For each, the repository is copied to a temporary
folder (without .venv and .git), the mutation applied there, and the tests that should notice it run against the
copy with this project's interpreter, the copy first on the import path (the package is installed in editable mode
pointing at this checkout, so the script checks that the copy's mutated module is the one imported). A mutation that
no test fails on "survived": the suite does not protect that behaviour. Every mutation must be caught.

    python scripts/mutation_check.py              # all mutations (about 10-25 min on 2 cores)
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --only peak-per-chunk csv-error-cut

A target text that is no longer found exactly once is an error (exit status 2): the code changed, update the
mutation. Before the mutations, each distinct test selection runs once on the unmutated copy; a selection that fails
there cannot show anything, so that is an error too. Exit status 0 when every mutation was caught, 1 otherwise.
Not part of the default test run (`python -m pytest` does not collect scripts/). Its last result: tests/README.md.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns(".venv", "venv", ".git", "__pycache__", ".pytest_cache", "*.onnx", "out", "*.egg-info")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest arguments: files and -k expressions
    what: str


MUTATIONS = [
    Mutation(
        "peak-per-chunk",
        "modeling_distillmos.py",
        "        peak = windows.abs().amax(dim=1, keepdim=True)\n",
        "        peak = windows.abs().amax()\n",
        ("tests/test_model.py", "-k", "windows_scored_in_chunks"),
        "one peak for the whole chunk of windows instead of one per window",
    ),
    Mutation(
        "no-resampling-off-16k-multiples",
        "feature_extraction_distillmos.py",
        "    if orig_freq == new_freq:\n        return waveform\n",
        "    if orig_freq == new_freq or orig_freq % new_freq:\n        return waveform\n",
        ("tests/test_model.py", "-k", "sampling_rate"),
        "audio whose rate is not a multiple of 16 kHz (8, 11.025, 22.05, 24, 44.1 kHz) is not resampled",
    ),
    Mutation(
        "no-resampling-off-16k-multiples-cli",
        "feature_extraction_distillmos.py",
        "    if orig_freq == new_freq:\n        return waveform\n",
        "    if orig_freq == new_freq or orig_freq % new_freq:\n        return waveform\n",
        ("tests/test_cli.py", "-k", "formats_and_sample_rates or console_script"),
        "the same, seen through the command line tool",
    ),
    Mutation(
        "csv-error-cut",
        "distill_mos/cli.py",
        '        "error": result.error,\n',
        '        "error": result.error and result.error.split(":")[0].split("(")[0].strip(),\n',
        ("tests/test_cli.py", "-k", "bad_file or multichannel"),
        "the CSV error text cut at its first ':' or '('",
    ),
    Mutation(
        "converter-swapped-layer-norms",
        "scripts/convert_original_checkpoint.py",
        '    ("norm1.", "layer_norm."),\n    ("norm2.", "final_layer_norm."),\n',
        '    ("norm1.", "final_layer_norm."),\n    ("norm2.", "layer_norm."),\n',
        ("tests/test_checkpoint.py",),
        "the checkpoint converter maps two same-shaped tensors to each other's names",
    ),
    Mutation(
        "windowing-plan",
        "modeling_distillmos.py",
        "    num_windows = int(np.ceil(overlength / max_hop)) + 1\n",
        "    num_windows = int(np.floor(overlength / max_hop)) + 1\n",
        ("tests/test_model.py", "-k", "window_outputs_describe or chunks"),
        "one window too few whenever the overlength is not a whole number of hops",
    ),
    Mutation(
        "attention-mask-ignored",
        "modeling_distillmos.py",
        "        lengths = self._validate(input_values, attention_mask)\n",
        "        lengths = self._validate(input_values, None)\n",
        ("tests/test_model.py", "-k", "padded_batch"),
        "clips of a padded batch scored with their padding (attention-mask lengths ignored)",
    ),
    Mutation(
        "failing-batch-loses-all",
        "distill_mos/scorer.py",
        "            scores = [self.score_clips([waveform])[0] for waveform in waveforms]\n",
        '            scores = [ScoringFailure(f"scoring failed: {error}", type(error).__name__)] * len(waveforms)\n',
        ("tests/test_robustness.py", "-k", "failing_batch"),
        "per-file error isolation: one clip that fails scoring costs its whole batch",
    ),
    Mutation(
        "bad-file-stops-the-run",
        "distill_mos/scorer.py",
        "        except ValueError as error:\n            result.error = str(error)\n",
        "        except ValueError:\n            raise\n",
        ("tests/test_cli.py", "-k", "bad_file"),
        "per-file error isolation: a file with NaN samples (a ValueError) stops the whole run",
    ),
    Mutation(
        "silent-clip-warning-dropped",
        "feature_extraction_distillmos.py",
        "            if not waveform.any():\n                warnings.warn(\n",
        "            if False:\n                warnings.warn(\n",
        ("tests/test_model.py", "-k", "silent"),
        "the feature extractor no longer warns about an all-zero clip",
    ),
    Mutation(
        "silent-file-warning-dropped",
        "distill_mos/scorer.py",
        '            notes = ([f"audio {SILENT}"] if not waveform.any() else [])',
        "            notes = []",
        ("tests/test_cli.py", "-k", "silent"),
        "the command line tool no longer warns about a silent file",
    ),
    Mutation(
        "mos-range-mapping",
        "modeling_distillmos.py",
        "        scale = self.config.mos_max - self.config.mos_min\n",
        "        scale = self.config.mos_max - self.config.mos_min - 0.01\n",
        ("tests/test_model.py", "-k", "sampling_rate and 48000"),
        "the sigmoid output mapped to 1..4.99 instead of 1..5",
    ),
    Mutation(
        "half-precision-aggregation",
        "modeling_distillmos.py",
        "        normalized = torch.cat(normalized).float()",
        "        normalized = torch.cat(normalized)",
        ("tests/test_robustness.py", "-k", "half_precision"),
        "float16 window scores averaged in float16",
    ),
    Mutation(
        "first-channel-is-the-mean",
        "distill_mos/audio.py",
        '    if channel == "first":\n        return samples[0]\n',
        '    if channel == "first":\n        return samples.mean(axis=0)\n',
        ("tests/test_cli.py", "-k", "multichannel"),
        "multi-channel audio mixed down instead of the first channel (as the original)",
    ),
]

# How a mutated file is imported in the tests (None: loaded by path from the copy's root, e.g. scripts/).
MODULES = {
    "modeling_distillmos.py": "modeling_distillmos",
    "feature_extraction_distillmos.py": "feature_extraction_distillmos",
    "distill_mos/cli.py": "distill_mos.cli",
    "distill_mos/scorer.py": "distill_mos.scorer",
    "distill_mos/audio.py": "distill_mos.audio",
}


def project_python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def environment(copy: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    for name, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
                        "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}.items():
        env.setdefault(name, value)
    return env


def check_targets(mutations: list[Mutation]) -> list[str]:
    problems = []
    for m in mutations:
        text = (ROOT / m.path).read_text()
        count = text.count(m.old)
        if count != 1:
            problems.append(f"{m.name}: the target text occurs {count} times in {m.path} (expected once):\n{m.old}")
    return problems


def imported_from(python: str, copy: Path, mutation: Mutation) -> str | None:
    """The file the tests import for the mutated module (as the copy's conftest sets the path up), or None."""
    module = MODULES.get(mutation.path)
    if module is None:
        return None
    code = f"import sys; sys.path.insert(0, 'tests'); import conftest, {module} as m; print(m.__file__)"
    done = subprocess.run([python, "-c", code], cwd=copy, env=environment(copy), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot import {module} from the copy:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def run_tests(python: str, copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, str, float]:
    """Runs pytest in the copy; returns (passed, summary of failures, seconds)."""
    command = [python, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *tests]
    start = time.time()
    try:
        done = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.time() - start
    output = done.stdout + done.stderr
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if done.returncode == 5:
        return False, "no test selected: " + " ".join(tests), time.time() - start
    return done.returncode == 0, "; ".join(failed)[:300] or output.strip().splitlines()[-1], time.time() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default 900)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs (faster, less sure)")
    args = parser.parse_args(argv)

    mutations = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.only and len(mutations) != len(set(args.only)):
        parser.error(f"unknown mutation(s): {sorted(set(args.only) - {m.name for m in MUTATIONS})}")
    if args.list:
        for m in mutations:
            print(f"{m.name:<40} {m.path:<40} {' '.join(m.tests)}\n    {m.what}")
        return 0
    problems = check_targets(mutations)
    if problems:
        print("mutation_check: targets not found; update MUTATIONS to the current code:\n\n" + "\n\n".join(problems),
              file=sys.stderr)
        return 2

    python = project_python()
    print(f"python: {python}; machine load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="distill-mos-mutation-") as folder:
        copy = Path(folder) / "repo"
        shutil.copytree(ROOT, copy, ignore=COPY_IGNORE, symlinks=True)

        if not args.no_baseline:
            for tests in dict.fromkeys(m.tests for m in mutations):
                passed, summary, seconds = run_tests(python, copy, tests, args.timeout)
                print(f"baseline {' '.join(tests)}: {'passed' if passed else 'FAILED'} ({seconds:.0f} s)", flush=True)
                if not passed:
                    print(f"mutation_check: the unmutated copy fails {' '.join(tests)}: {summary}", file=sys.stderr)
                    return 2

        results = []
        for m in mutations:
            target = copy / m.path
            original = target.read_text()
            target.write_text(original.replace(m.old, m.new, 1))
            try:
                source = imported_from(python, copy, m)
                if source is not None:
                    source = Path(source).resolve()
                    if source != target.resolve() or m.new not in source.read_text():
                        print(f"mutation_check: {m.name}: the tests would import {source}, not the mutated "
                              f"{target}", file=sys.stderr)
                        return 2
                passed, summary, seconds = run_tests(python, copy, m.tests, args.timeout)
            finally:
                target.write_text(original)
            results.append((m, not passed, summary, seconds))
            print(f"{'caught  ' if not passed else 'SURVIVED'} {m.name:<40} {seconds:5.0f} s  {summary}", flush=True)

    survivors = [m.name for m, caught, _, _ in results if not caught]
    print(f"\n{len(results) - len(survivors)} of {len(results)} mutations caught"
          + (f"; SURVIVED: {', '.join(survivors)}" if survivors else ""))
    print("\n| mutation | file | tests run | caught by |\n|---|---|---|---|")
    for m, caught, summary, _ in results:
        first = re.sub(r"^(FAILED|ERROR) ", "", summary.split("; ")[0]).split(" - ")[0] if caught else "**survived**"
        print(f"| {m.name} | `{m.path}` | `{' '.join(m.tests)}` | {first} |")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
