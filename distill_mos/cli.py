"""`distill-mos`: score speech files, folders and file lists from the command line."""

import argparse
import csv
import json
import sys
from pathlib import Path

from .audio import AUDIO_SUFFIXES

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE = 0, 1, 2
COLUMNS = ["file", "mos", "duration_s", "sampling_rate", "channels", "error"]
WINDOW_COLUMNS = ["window_scores", "window_starts"]
PROGRESS_MIN_FILES = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-mos",
        description="Predict the speech quality (MOS, 1 = bad .. 5 = excellent) of audio files with Distill-MOS.",
        epilog="Exit status: 0 every file scored, 1 some file failed (see its error column), 2 bad arguments.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="audio files and/or folders")
    parser.add_argument(
        "-l", "--file-list", "--file_list", type=Path,
        help="text file with one audio path per line, or a CSV with a 'file' (or 'path') column; paths are "
             "relative to the single folder given as input, if any",
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="search folders recursively")
    parser.add_argument("-o", "--output", default="-", help="output file (.csv or .jsonl), or - for stdout (default)")
    parser.add_argument("--format", choices=["csv", "jsonl"], help="output format (default: from the extension, else csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--windows", action="store_true", help="add per-window scores and start times (seconds)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=8, help="files per model call (default: 8)")
    parser.add_argument("--channel", default="first", help="multi-channel audio: first (default, as the original), mean, or a 0-based index")
    parser.add_argument(
        "--window-hop", type=float, default=None,
        help="fast mode for long audio: seconds between windows (default: exact, 1 s as the original; e.g. 4)",
    )
    parser.add_argument(
        "--backend", choices=["torch", "onnx"], default="torch",
        help="network runtime: torch (default) or onnx (ONNX Runtime; needs onnx + onnxruntime; exported on first use)",
    )
    parser.add_argument("--onnx-path", default=None, help="ONNX file for --backend onnx (default: ~/.cache/distill-mos/)")
    parser.add_argument("--half", action="store_true", help="float16 autocast on a CUDA GPU (faster, slightly different)")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: $DISTILL_MOS_MODEL, else this checkout or the pip-installed copy, else the Hub)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-file errors on stderr")
    return parser


def _read_file_list(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            column = next((c for c in ("file", "path", "filename") if c in (reader.fieldnames or [])), None)
            if column is None:
                raise ValueError(f"{path}: a CSV file list needs a 'file' or 'path' column, found {reader.fieldnames}")
            return [row[column].strip() for row in reader if row[column].strip()]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def collect_files(inputs: list[Path], file_list: Path | None, recursive: bool) -> list[str]:
    """Expands the command line's inputs into the list of files to score, in a stable order."""
    if file_list is not None:
        folders = [p for p in inputs if p.is_dir()]
        if len(inputs) > 1 or (inputs and not folders):
            raise ValueError("with --file-list, give at most one input, the folder the listed paths are relative to")
        base = folders[0] if folders else None
        return [str(base / entry) if base and not Path(entry).is_absolute() else entry for entry in _read_file_list(file_list)]
    files = []
    for item in inputs:
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in item.glob(pattern) if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise ValueError(f"{item}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) found"
                                 + ("" if recursive else "; use -r to search subfolders"))
            files.extend(str(p) for p in found)
        else:  # a missing file is reported as that file's error, not as a usage error
            files.append(str(item))
    return files


def _parse_channel(value: str) -> str | int:
    if value in ("first", "mean"):
        return value
    try:
        index = int(value)
    except ValueError:
        raise ValueError(f"--channel must be first, mean or a channel index, got {value!r}") from None
    if index < 0:
        raise ValueError(f"--channel index must be 0 or more, got {index}")
    return index


def _row(result, windows: bool) -> dict:
    row = {
        "file": result.path,
        "mos": None if result.mos is None else round(result.mos, 6),
        "duration_s": None if result.duration is None else round(result.duration, 4),
        "sampling_rate": result.sampling_rate,
        "channels": result.channels,
        "error": result.error,
    }
    if windows:
        row["window_scores"] = [round(s, 6) for s in result.window_scores]
        row["window_starts"] = [round(s, 4) for s in result.window_starts]
    return row


class _Writer:
    """Writes rows as they come (CSV or JSON Lines), so an interrupted run keeps what it scored."""

    def __init__(self, handle, fmt: str, windows: bool):
        self.handle, self.fmt = handle, fmt
        if fmt == "csv":
            self.csv = csv.DictWriter(handle, fieldnames=COLUMNS + (WINDOW_COLUMNS if windows else []))
            self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.handle.write(json.dumps(row) + "\n")
        else:
            self.csv.writerow({
                k: ";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()
            })
        self.handle.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's own usage errors (status 2)
        return exit_.code

    def usage_error(message: str) -> int:
        parser.print_usage(sys.stderr)
        print(f"distill-mos: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    if not args.inputs and args.file_list is None:
        return usage_error("give audio files, folders, or --file-list")
    if args.batch_size < 1:
        return usage_error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.window_hop is not None and args.window_hop <= 0:
        return usage_error(f"--window-hop must be a positive number of seconds, got {args.window_hop}")
    if args.file_list is not None and not args.file_list.is_file():
        return usage_error(f"{args.file_list}: file list not found")
    try:
        channel = _parse_channel(args.channel)
        files = collect_files(args.inputs, args.file_list, args.recursive)
    except (ValueError, OSError) as error:
        return usage_error(str(error))
    if not files:
        return usage_error("no files to score")

    to_stdout = args.output == "-"
    fmt = args.format or ("jsonl" if str(args.output).lower().endswith((".jsonl", ".json")) else "csv")
    if not to_stdout:
        output = Path(args.output)
        if output.exists() and not args.overwrite:
            return usage_error(f"{output} already exists; pass --overwrite to replace it")
        if not output.parent.is_dir():
            return usage_error(f"{output.parent}: output folder does not exist")

    import torch  # imported late so that --help and argument errors are instant
    from transformers.utils import logging as hf_logging

    from .scorer import DistillMOSScorer

    hf_logging.disable_progress_bar()
    try:
        scorer = DistillMOSScorer.from_pretrained(
            args.model, device=args.device, batch_size=args.batch_size, window_hop=args.window_hop,
            backend=args.backend, onnx_path=args.onnx_path, half=args.half,
        )
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        return usage_error(f"could not load the model: {error}")

    show_progress = len(files) >= PROGRESS_MIN_FILES and not (args.no_progress or args.quiet)
    failures = 0
    handle = sys.stdout if to_stdout else open(args.output, "w", newline="")
    try:
        writer = _Writer(handle, fmt, args.windows)
        progress = None
        if show_progress:
            from tqdm import tqdm

            progress = tqdm(total=len(files), unit="file", file=sys.stderr, desc="distill-mos")
        say = progress.write if progress else (lambda message: print(message, file=sys.stderr))
        with torch.inference_mode():
            for result in scorer.score_files(files, channel=channel):
                failures += result.error is not None
                if not args.quiet and (result.error or result.warning):
                    say(f"{'error' if result.error else 'warning'}: {result.path}: {result.error or result.warning}")
                writer.write(_row(result, args.windows))
                if progress:
                    progress.update()
        if progress:
            progress.close()
    finally:
        if not to_stdout:
            handle.close()
    if failures and not args.quiet:
        print(f"distill-mos: {failures} of {len(files)} file(s) could not be scored", file=sys.stderr)
    return EXIT_FAILED_FILES if failures else EXIT_OK


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
