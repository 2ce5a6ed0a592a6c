"""
`distill-mos conformance`: are the scores on this machine the published ones?

    distill-mos conformance                       # float32, torch, the default device: fails past 1e-4 MOS
    distill-mos conformance --dtype bfloat16      # the deviations of a fast setting, reported (no verdict)

Scores the bundled clips (tests/data of a checkout) on the one scoring path and compares them, clip by clip, with
the committed scores of the ORIGINAL package (`distillmos==0.9.1` from PyPI, its own CLI function
`distillmos.sqa._infer_file_list`): tests/data/conformance_reference.csv, whose provenance (package, torch, machine)
is in conformance_reference.csv.provenance.json beside it. `--write-reference` recomputes that file with the
original package (needs `pip install distillmos==0.9.1`).
"""

import argparse
import csv
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
REFERENCE = DATA / "conformance_reference.csv"
# float32 must give the original's scores to this (README's parity figure); other precisions are reported only.
FLOAT32_TOLERANCE = 1e-4
EXIT_OK, EXIT_DEVIATES, EXIT_USAGE = 0, 1, 2


@dataclass
class Deviation:
    """One clip: `reference` (the original package's MOS), `mos` (this machine's), `delta` = mos - reference."""

    file: str
    reference: float
    mos: float | None
    error: str | None = None

    @property
    def delta(self) -> float | None:
        return None if self.mos is None else self.mos - self.reference


def conformance_files(data: Path = DATA) -> list[Path]:
    """The bundled clips, relative paths sorted: the conformance set."""
    return sorted(path.relative_to(data) for path in data.glob("*/audio/**/*.wav"))


def read_reference(path: Path = REFERENCE) -> dict[str, float]:
    with open(path, newline="") as handle:
        return {row["file"]: float(row["mos"]) for row in csv.DictReader(handle)}


def machine() -> str:
    """The CPU's model name (as lscpu prints it), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_reference(path: Path = REFERENCE, data: Path = DATA) -> Path:
    """Scores the conformance set with the original package's own CLI function and writes the reference file."""
    import distillmos
    import torch
    from distillmos import sqa

    files = conformance_files(data)
    scores = dict(sqa._infer_file_list([str(data / f) for f in files]))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "mos"])
        for file in files:
            writer.writerow([file.as_posix(), f"{scores[str(data / file)]:.7f}"])
    record = {
        "produced_by": f"distillmos {getattr(distillmos, '__version__', '0.9.1')} (PyPI), distillmos.sqa._infer_file_list",
        "torch": torch.__version__,
        "machine": machine(),
        "precision": "float32",
        "files": "tests/data/*/audio/**/*.wav, paths relative to tests/data",
    }
    (path.with_name(path.name + ".provenance.json")).write_text(json.dumps(record, indent=2) + "\n")
    return path


def compare(scorer, reference: dict[str, float], data: Path = DATA) -> list[Deviation]:
    files = sorted(reference)
    results = scorer.score_files([str(data / f) for f in files])
    return [Deviation(file, reference[file], r.mos, r.error) for file, r in zip(files, results)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-mos conformance",
        description="Score the bundled clips and compare with the original package's committed scores (distillmos "
                    f"0.9.1): exit 1 past {FLOAT32_TOLERANCE:g} MOS in float32.",
    )
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the released model)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="reference scores (default: the committed ones)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help=f"largest |deviation| allowed, MOS (default: {FLOAT32_TOLERANCE:g} in float32, none otherwise)")
    parser.add_argument("--write-reference", action="store_true",
                        help="recompute --reference with the original package (pip install distillmos==0.9.1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and usage errors exit in argparse (status 0 and 2)
    if not DATA.is_dir() or not args.reference.is_file() and not args.write_reference:
        print(f"distill-mos conformance: error: the conformance set ships with a checkout ({DATA}, {args.reference} "
              "not found)", file=sys.stderr)
        return EXIT_USAGE
    if args.write_reference:
        try:
            print(f"wrote {write_reference(args.reference)}")
        except ImportError as error:
            print(f"distill-mos conformance: error: --write-reference needs distillmos==0.9.1 ({error})", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK

    from transformers.utils import logging as hf_logging

    from .scorer import DistillMOSScorer

    hf_logging.disable_progress_bar()
    try:
        scorer = DistillMOSScorer.from_pretrained(args.model, device=args.device, dtype=args.dtype, backend=args.backend)
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        print(f"distill-mos conformance: error: could not load the model: {error}", file=sys.stderr)
        return EXIT_USAGE
    import torch

    record = scorer.provenance
    tolerance = args.tolerance if args.tolerance is not None else (
        FLOAT32_TOLERANCE if record.precision == "float32" else None)
    deviations = compare(scorer, read_reference(args.reference))
    print(f"machine: {machine()} | torch {torch.__version__} | {record.summary()}")
    print(f"{'file':58} {'original':>9} {'this run':>9} {'delta':>10}")
    for d in deviations:
        shown = f"{d.mos:9.6f} {d.delta:+10.2e}" if d.mos is not None else f"error: {d.error}"
        print(f"{d.file:58} {d.reference:9.6f} {shown}")
    scored = [abs(d.delta) for d in deviations if d.delta is not None]
    worst = max(scored, default=float("nan"))
    failed = len(scored) < len(deviations)
    print(f"max |delta| {worst:.2e} MOS over {len(scored)} of {len(deviations)} clips", end="")
    if tolerance is None:
        print(f" ({record.precision}: deviations reported, no tolerance; the exact setting is float32)")
        return EXIT_DEVIATES if failed else EXIT_OK
    passed = not failed and worst <= tolerance
    print(f": {'conforms' if passed else 'DOES NOT conform'} (tolerance {tolerance:g})")
    return EXIT_OK if passed else EXIT_DEVIATES


if __name__ == "__main__":
    sys.exit(main())
