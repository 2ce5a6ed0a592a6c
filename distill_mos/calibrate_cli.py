"""
`distill-mos calibrate`: a score interval calibrated on a listening test, written into a copy of the model.

    distill-mos calibrate --labels tests/data/genspeech/labels.csv --labels tests/data/tcdvoip/labels.csv \\
        --group-column ref_file --output-dir calibrated/
    distill-mos clips/ --model calibrated/        # every row now has mos_low and mos_high

The labels are read with the library's label loader (a CSV with `file`, relative to the CSV, and `mos` columns;
unrated rows are skipped), the files scored on the one scoring path, and the split-conformal half-width of
`distill_mos.calibration` stored in the copy's config.json as `mos_interval`, with the coverage measured on unseen
groups beside the nominal one.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

from .calibration import CONFIG_KEY, CalibrationError, MOSInterval, calibrate, require_enough_labels, to_mos_scale

EXIT_OK, EXIT_USAGE = 0, 2
# The model files copied byte for byte (so the copy's weights keep their SHA-256), and its remote code.
COPIED = ("model.safetensors", "preprocessor_config.json", "*_distillmos.py")


def load_label_csv(path: Path, group_column: str | None, mos_column: str):
    """
    (audio paths, labels, groups or None) from a labels CSV, through the library's label loader. Until
    `distill_mos.labels` lands, the loader is eval/benchmark.py's `load_csv` (in a checkout).
    """
    try:
        from .labels import load_csv  # noqa: F401 - its future home
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        try:
            from eval.benchmark import load_csv
        except ImportError as error:
            raise CalibrationError(f"the label loader is not available ({error}); run from a checkout") from None
    try:
        # the loader's system column carries the grouping column (one stimulus per group)
        dataset = load_csv(path, mos_column=mos_column, system_column=group_column or None)
    except ValueError as error:  # BenchmarkError: no such file, missing column, not a number
        raise CalibrationError(str(error)) from None
    groups = [f"{path}:{g}" for g in dataset["system"]] if group_column else None
    files = [audio["path"] for audio in dataset.cast_column("audio", _undecoded())["audio"]]
    return files, list(dataset["human_mos"]), groups


def _undecoded():
    import datasets

    return datasets.Audio(decode=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-mos calibrate",
        description="Calibrate a score interval (split conformal) on human MOS labels and write it into a copy of "
                    "the model: its scores then come with mos_low and mos_high.",
    )
    parser.add_argument("--labels", action="append", required=True, type=Path,
                        help="CSV with 'file' (relative to the CSV) and 'mos' columns; repeat to pool several tests")
    parser.add_argument("--label-range", nargs=2, type=float, default=(1.0, 5.0), metavar=("LOW", "HIGH"),
                        help="the labels' scale, mapped linearly to 1..5 (default: 1 5); labels outside are an error")
    parser.add_argument("--group-column", default=None,
                        help="column naming the stimulus (e.g. the reference file), so that coverage is measured "
                             "on unseen stimuli (default: each file its own group)")
    parser.add_argument("--mos-column", default="mos", help="column of the human MOS (default: mos)")
    parser.add_argument("--coverage", type=float, default=0.9, help="nominal coverage (default: 0.9)")
    parser.add_argument("--folds", type=int, default=5, help="grouped folds measuring coverage (default: 5)")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the released model)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for the calibrated copy of the model")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    return parser


def write_calibrated_copy(location: str, scorer, interval: MOSInterval, output_dir: Path) -> Path:
    """Copies the model at `location` to `output_dir` (weights byte for byte) with `interval` in its config.json."""
    output_dir.mkdir(parents=True, exist_ok=True)
    source = Path(location).expanduser()
    if source.is_dir():
        for pattern in COPIED:
            for path in source.glob(pattern):
                shutil.copy2(path, output_dir / path.name)
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    else:  # a Hub id: what from_pretrained loaded
        scorer.model.save_pretrained(output_dir)
        scorer.feature_extractor.save_pretrained(output_dir)
        config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    config[CONFIG_KEY] = interval.to_config()
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return output_dir


def run(args) -> MOSInterval:
    files, labels, groups = [], [], []
    for path in args.labels:
        found, rated, grouped = load_label_csv(path, args.group_column, args.mos_column)
        files += found
        labels += rated
        groups += grouped if grouped else found
    human = to_mos_scale(labels, args.label_range, names=files)
    require_enough_labels(len(human))
    output_dir = args.output_dir
    if output_dir.exists() and any(output_dir.iterdir()) and not args.overwrite:
        raise CalibrationError(f"{output_dir} is not empty; pass --overwrite to replace what is there")

    from .scorer import DistillMOSScorer, default_model_location

    location = args.model or default_model_location()
    scorer = DistillMOSScorer.from_pretrained(location, device=args.device)
    if scorer.interval is not None:
        print(f"distill-mos calibrate: {location} already carries an interval; it is replaced", file=sys.stderr)
    scored = list(scorer.score_files(files))
    failed = [r for r in scored if r.mos is None]
    for result in failed:
        print(f"distill-mos calibrate: skipped {result.path}: {result.error}", file=sys.stderr)
    keep = [i for i, r in enumerate(scored) if r.mos is not None]
    interval = calibrate(
        [scored[i].mos for i in keep], human[keep], [groups[i] for i in keep], coverage=args.coverage,
        folds=args.folds, data=", ".join(str(p) for p in args.labels), group_column=args.group_column,
        label_range=args.label_range,
    )
    write_calibrated_copy(location, scorer, interval, output_dir)
    return interval


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and usage errors exit in argparse (status 0 and 2)
    try:
        interval = run(args)
    except (CalibrationError, OSError) as error:
        print(f"distill-mos calibrate: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"interval: {interval.summary()}\nwritten to {args.output_dir}: distill-mos FILES --model "
        f"{args.output_dir} gives mos_low and mos_high"
    )
    return EXIT_OK
