"""Command line of `python -m distill_mos.finetune`."""

import argparse
import sys

from . import FinetuneError, FinetuneSettings, finetune, format_interval, format_table
from .training import DEFAULT_STEPS, LARGE_SET_VALIDATION_FRACTION, LOSSES, SMALL_SET, TRAIN_LAYERS


def build_parser() -> argparse.ArgumentParser:
    defaults = FinetuneSettings()
    parser = argparse.ArgumentParser(
        prog="python -m distill_mos.finetune",
        description="Fine-tune Distill-MOS on your own listening test. With --cv K: grouped K-fold cross-validation "
                    "(DIR/results.json: the released and the fine-tuned model's out-of-fold PCC, SRCC, KTAU, RMSE). "
                    "Without: train on all clips and save DIR/model/ (a model repository with a model card).",
    )
    parser.add_argument("--labels", required=True,
                        help="CSV with 'file' (relative to the CSV) and 'mos' columns, an audiofolder (audio + "
                             "metadata.csv), a folder written by save_to_disk, or a Hub dataset id")
    parser.add_argument("--output-dir", required=True, help="folder for results.json / the model")
    parser.add_argument("--cv", type=int, metavar="K", help="K-fold cross-validation instead of saving a model; also "
                        "gives the score interval (split conformal on the out-of-fold residuals) that the model "
                        "trained afterwards into the same --output-dir carries")
    parser.add_argument("--coverage", type=float, default=0.9,
                        help="nominal coverage of that interval (default: 0.9)")
    parser.add_argument("--group-column", help="column whose value the files of one stimulus (or talker) share: a "
                        "group is never in both the training and the test part of a fold, nor of the validation split")
    parser.add_argument("--label-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="labels on another scale, mapped linearly onto 1..5 (e.g. 0 100 for MUSHRA); "
                             "then only correlations are reported")
    parser.add_argument("--train-all", action="store_true",
                        help="train every parameter on raw windows (slow) instead of the cached-feature head")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help=f"AdamW peak learning rate, linear warm-up and decay (default {defaults.learning_rate:g})")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help=f"optimizer steps, whatever the number of files (default "
                        f"{DEFAULT_STEPS})")
    length.add_argument("--epochs", type=float, help="passes over the training files instead of --steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"clips per step (default {defaults.batch_size})")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction,
                        help=f"share of the training clips (whole groups) held out for early stopping (default: none "
                             f"below {SMALL_SET} files, {LARGE_SET_VALIDATION_FRACTION:g} from there; 0: never)")
    parser.add_argument("--patience", type=int, default=defaults.early_stopping_patience,
                        help="evaluations (ten per run) without a better validation loss before stopping")
    parser.add_argument("--warmup", type=float, default=defaults.warmup,
                        help=f"share of the steps with a linearly rising learning rate (default {defaults.warmup:g})")
    parser.add_argument("--train-layers", choices=TRAIN_LAYERS, default=defaults.train_layers,
                        help="what trains on the cached features: head (projection, transformer, pooling; default), "
                             "last (last transformer layer and pooling), pooling")
    parser.add_argument("--loss", choices=LOSSES, default=defaults.loss,
                        help="clip (each clip's mean window score; default) or window (each window towards its "
                             "clip's label); the same for clips up to 7.68 s")
    parser.add_argument("--search", action="store_true",
                        help="choose the learning rate and steps by an inner grouped cross-validation on the training "
                             "files (inside each --cv fold); about 14.5 times the optimizer steps")
    parser.add_argument("--model", help="model to start from: folder or Hub id (default: as distill-mos)")
    parser.add_argument("--file-column", default="file", help="CSV column with the audio paths (default: file)")
    parser.add_argument("--mos-column", help="label column (default: 'mos' for CSV, else the first of mos, MOS, ...)")
    parser.add_argument("--audio-column", help="dataset audio column (default: the first Audio column)")
    parser.add_argument("--split", help="dataset split (default: the only one, else 'test')")
    parser.add_argument("--channel", default="first", help="multi-channel audio: first (default), mean, or an index")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--jobs", type=int, help="with --cv on a CPU: folds trained side by side, each a process on "
                        "one torch thread (default: one per core, at most K)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results.json / model folder")
    parser.add_argument("--quiet", action="store_true", help="print only problems and the result")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when every rated row was used, 1 when some were left out (reported), 2 for bad usage."""
    args = build_parser().parse_args(argv)
    settings = FinetuneSettings(
        learning_rate=args.learning_rate, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
        weight_decay=args.weight_decay, seed=args.seed, validation_fraction=args.validation_fraction,
        early_stopping_patience=args.patience, warmup=args.warmup, train_layers=args.train_layers, loss=args.loss,
        train_all=args.train_all, search=args.search,
    )
    channel = int(args.channel) if args.channel.isdigit() else args.channel
    if args.quiet:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    try:
        result = finetune(
            args.labels, args.output_dir, cv=args.cv, coverage=args.coverage, group_column=args.group_column,
            label_range=tuple(args.label_range) if args.label_range else None, settings=settings,
            base_model=args.model, file_column=args.file_column, mos_column=args.mos_column,
            audio_column=args.audio_column, split=args.split, channel=channel, device=args.device, jobs=args.jobs,
            overwrite=args.overwrite, verbose=not args.quiet,
        )
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.quiet and args.cv:  # the figures and the interval are the result: printed even when quiet
        print(format_table(result.results))
        if format_interval(result.results):
            print(format_interval(result.results))
    elif args.quiet:
        print(f"Saved the model to {result.model_dir}")
    left_out = [issue for issue in result.issues if issue.level == "error"]
    if left_out:
        print(f"{len(left_out)} row(s) were left out (see above).", file=sys.stderr)
        return 1
    return 0
