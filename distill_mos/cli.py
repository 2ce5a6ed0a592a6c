"""
`distill-mos`: score speech files, folders and file lists from the command line.

Start-up matters for a command line tool: `--help`, `--version` and every argument error are answered before torch,
transformers or Ray are imported (they cost seconds); only a run that scores something imports them.
"""

import argparse
import csv
import errno
import io
import json
import os
import re
import shutil
import stat
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from .audio import AUDIO_SUFFIXES
from .cells import neutralise_cell, neutralise_row, printable_path
from .columns import CHECK_COLUMNS, COLUMNS, DTYPE_CHOICES, INTERVAL_COLUMNS, WINDOW_COLUMNS
from .provenance import check_model_location, read_sidecar, rename_sidecar, resume_conflict, write_sidecar
from .results import FileScore, file_row, from_file_row

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROGRESS_MIN_FILES = 4
DTYPES = DTYPE_CHOICES
# `distill-mos NAME ...`: commands other than scoring, each a module with `main(argv) -> int`, imported only when
# named (so that `distill-mos --help` stays fast). A file or folder of that name is still scored: `./report`.
SUBCOMMANDS = {
    "report": "distill_mos.report_cli",
    "compare-systems": "distill_mos.compare_cli",
    "calibrate": "distill_mos.calibrate_cli",
    "conformance": "distill_mos.conformance",
}
PARTIAL_SUFFIX = ".partial"
# `--ray ADDRESS`: what Ray's `ray.init(address=...)` accepts; anything else after --ray is taken for an input.
_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-\[\]:]+:\d+)$")


class UsageError(Exception):
    """A problem with the arguments or the output: reported as one line on stderr, exit status 2."""


class ResumeRefused(UsageError):
    """--resume onto rows made with another model, precision, backend or hop: one line, no usage text."""


def _version() -> str:
    from . import __version__
    from .provenance import version_text

    return version_text(__version__, Path(__file__).resolve().parents[1])


class _VersionAction(argparse.Action):
    """--version: hashes the default model's weights only when asked (not each time the parser is built)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the version and the default model's weights SHA-256, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-mos",
        description="Predict the speech quality (MOS, 1 = bad .. 5 = excellent) of audio files with Distill-MOS.",
        epilog="Exit status: 0 every file scored, 1 some file failed (see its error column), 2 bad arguments or "
               "output, 130 interrupted (rerun with --resume to continue). "
               "Live scoring: distill-mos --stream SOURCE (see distill-mos --stream - --help).",
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="audio files and/or folders")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "-l", "--file-list", "--file_list", type=Path,
        help="text file with one audio path per line, or a CSV with a 'file' (or 'path') column; paths are "
             "relative to the single folder given as input, if any",
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="search folders recursively")
    parser.add_argument(
        "-o", "--output", default="-",
        help="output file (.csv or .jsonl), or - for stdout (default). A file is written as OUTPUT.partial and "
             "renamed when the run completes",
    )
    parser.add_argument("--format", choices=["csv", "jsonl"], help="output format (default: from the extension, else csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run (or extend a finished one): keep the rows already in OUTPUT (or "
             "OUTPUT.partial), score only the inputs without a row, and append",
    )
    parser.add_argument("--windows", action="store_true", help="add per-window scores and start times (seconds)")
    parser.add_argument(
        "--checks", action="store_true",
        help="input checks: add speech_share (Silero VAD), loudness_lufs (ITU-R BS.1770), clipped_share and "
             "bandwidth_hz columns, and a warning where one says the score means little (pip install "
             "'distill-mos-hf[checks]')",
    )
    parser.add_argument(
        "--safe-csv", action="store_true",
        help="CSV for spreadsheets: a cell starting with = + - @ or a tab or carriage return (e.g. a file named "
             "'=cmd|...') gets a leading ' so that it is shown as text, never run as a formula (OWASP). Off by default: "
             "it changes such file names in the output. Give it again with --resume",
    )
    parser.add_argument(
        "--max-duration", type=float, default=None, metavar="SECONDS",
        help="refuse audio longer than SECONDS (an error row, found while decoding, before it is all read); "
             "default: no limit (any length is scored in bounded memory)",
    )
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
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32",
        help="weights and compute precision (default: float32, exact; auto picks a fast one for the device)",
    )
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: $DISTILL_MOS_MODEL, else this checkout or the pip-installed copy, else the Hub)")
    parser.add_argument(
        "--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
        help="score with Ray Data (pip install 'distill-mos-hf[ray]'): without ADDRESS a local Ray instance on this "
             "machine; with one (auto, HOST:PORT, ray://HOST:PORT) the cluster there. Same rows as without --ray",
    )
    parser.add_argument(
        "--ray-actors", type=int, default=None,
        help="with --ray: model replicas (default: one per GPU of the cluster, else one per CPU core)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-file errors on stderr")
    return parser


# --- inputs ---------------------------------------------------------------------------------------------------------


def _read_file_list(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            column = next((c for c in ("file", "path", "filename") if c in (reader.fieldnames or [])), None)
            if column is None:
                raise ValueError(f"{path}: a CSV file list needs a 'file' or 'path' column, found {reader.fieldnames}")
            return [row[column].strip() for row in reader if row[column].strip()]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _scan_folder(folder: Path, recursive: bool, problems: dict[str, str]) -> list[str]:
    """
    The audio files in `folder` (by suffix), sorted, subfolders too if `recursive`. Entries that cannot be opened
    (broken or looping symbolic links, unreadable files) are kept so that they get an error row; a subfolder that
    cannot be listed is recorded in `problems` (path -> reason) and kept too. Symbolic links to folders are followed
    once (a link back to a folder already visited is not walked again).
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set()

    def walk(directory: Path) -> None:
        try:
            info = directory.stat()
            if (info.st_dev, info.st_ino) in seen:
                return
            seen.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            problems[str(directory)] = f"folder cannot be read ({error.strerror or error})"
            found.append(str(directory))
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links; False for broken links and loops
            except OSError:
                is_dir = False
            if is_dir:
                if recursive:
                    walk(path)
            elif path.suffix.lower() in AUDIO_SUFFIXES:
                found.append(str(path))

    walk(folder)
    return [str(p) for p in sorted(map(Path, found))]


def collect_files(
    inputs: list[Path], file_list: Path | None, recursive: bool, problems: dict[str, str] | None = None
) -> list[str]:
    """
    Expands the command line's inputs into the list of files to score, in a stable order. Every path the user named
    and every audio entry a folder scan found is listed, whether or not it can be opened: the scorer gives it an
    error row. Folders that cannot be listed go to `problems` (path -> reason) as well.
    """
    problems = {} if problems is None else problems
    if file_list is not None:
        folders = [p for p in inputs if _is_dir(p)]
        if len(inputs) > 1 or (inputs and not folders):
            raise ValueError("with --file-list, give at most one input, the folder the listed paths are relative to")
        base = folders[0] if folders else None
        return [str(base / entry) if base and not Path(entry).is_absolute() else entry for entry in _read_file_list(file_list)]
    files = []
    for item in inputs:
        if _is_dir(item):
            found = _scan_folder(item, recursive, problems)
            if not found:  # an error row for the empty folder: the other inputs are still scored
                problems[str(item)] = (f"folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})"
                                       + ("" if recursive else "; use -r to search subfolders"))
                found = [str(item)]
            files.extend(found)
        else:  # a missing or unreachable file is reported as that file's error, not as a usage error
            files.append(str(item))
    return files


def _is_dir(path: Path) -> bool:
    """`path.is_dir()`, False (the scorer then says why it cannot be opened) where it cannot even be looked at: a
    folder on the way may not be searched (Python 3.11's `is_dir` raises PermissionError there)."""
    try:
        return path.is_dir()
    except OSError:
        return False


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


# --- output ---------------------------------------------------------------------------------------------------------


class _Writer:
    """Writes rows as they come (CSV or JSON Lines), flushed one by one, so an interrupted run keeps what it scored."""

    def __init__(self, handle, fmt: str, windows: bool, header: bool = True, extra_columns=(), safe_csv: bool = False):
        self.handle, self.fmt, self.safe_csv = handle, fmt, safe_csv
        if fmt == "csv":
            fieldnames = COLUMNS + (WINDOW_COLUMNS if windows else []) + list(extra_columns)
            self.csv = csv.DictWriter(handle, fieldnames=fieldnames)
            if header:
                self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.handle.write(json.dumps(row) + "\n")
        else:
            self.csv.writerow(self.cells(row))
        self.handle.flush()

    def cells(self, row: dict) -> dict:
        """A row as its CSV cells are written (lists joined by ";", formulas neutralised with --safe-csv)."""
        cells = {k: ";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()}
        return neutralise_row(cells) if self.safe_csv else cells


def _is_special(path: Path) -> bool:
    """A device, pipe or socket (/dev/full, /dev/stdout, a FIFO): written in place, never renamed over."""
    try:
        return not stat.S_ISREG(path.stat().st_mode) and not path.is_dir()
    except OSError:
        return False


def partial_path(output: Path) -> Path:
    """Where rows go while a run is in progress: `<output>.partial`, renamed to `output` when the run completes."""
    return output.with_name(output.name + PARTIAL_SUFFIX)


def read_done_rows(path: Path, fmt: str, windows: bool, extra_columns=()) -> list[dict]:
    """
    The complete rows of an earlier run's output, for `--resume`. A last line cut short by a killed process is
    dropped and cut off the file, so that appending continues on a clean line. Raises UsageError when the file
    was written with other columns (e.g. without --windows) or is not this tool's output.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if fmt == "csv":  # a newline inside a quoted field (a file name may hold one) is not a record's end
        end = _complete_csv_records(data[:end])
    if end < len(data):  # a row cut short: drop it
        with open(path, "r+b") as handle:
            handle.truncate(end)
        data = data[:end]
    text = data.decode("utf-8")
    expected = COLUMNS + (WINDOW_COLUMNS if windows else []) + list(extra_columns)
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if text and reader.fieldnames != expected:
            raise UsageError(
                f"{path}: cannot resume: its columns {reader.fieldnames} are not {expected} "
                "(same --windows and --format as the interrupted run?)"
            )
        return list(reader)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path}: cannot resume: line {number} is not JSON") from None
        if not isinstance(row, dict) or list(row) != expected:
            raise UsageError(f"{path}: cannot resume: line {number} does not hold the columns {expected} (same --windows?)")
        rows.append(row)
    return rows


def _complete_csv_records(data: bytes) -> int:
    """
    The length of the complete CSV records at the start of `data` (which ends with a newline): a process killed
    inside a quoted field that holds a newline leaves an open quote, which Python's csv module, reading strictly,
    reports at the end of the data; everything from the start of that record on is cut.
    """
    lines = io.StringIO(data.decode("utf-8", errors="surrogateescape"), newline="").readlines()
    reader = csv.reader(iter(lines), strict=True)
    complete = 0  # physical lines holding whole records
    try:
        for _ in reader:
            complete = reader.line_num
    except csv.Error:
        pass
    return len("".join(lines[:complete]).encode("utf-8", errors="surrogateescape"))


def _remaining(files: list[str], done_rows: list[dict], written_name=printable_path) -> list[str]:
    """
    The inputs without a row yet (a file listed twice needs two rows, as in an uninterrupted run). `written_name`
    gives an input's `file` cell as the output holds it (a name that is not UTF-8 escaped, --safe-csv's quote).
    """
    done = Counter(row["file"] for row in done_rows)
    remaining = []
    for file in files:
        name = written_name(file)
        if done[name] > 0:
            done[name] -= 1
        else:
            remaining.append(file)
    return remaining


class _Output:
    """
    Where rows go. A regular output file is written as `<output>.partial` and renamed to its name only when every
    row is in, so a file under the requested name is always complete; an interrupted run leaves the `.partial`
    file, which `--resume` continues. stdout and special files (/dev/full, a FIFO) are written in place.
    """

    def __init__(self, output: str, fmt: str, windows: bool, overwrite: bool, resume: bool, extra_columns=()):
        self.fmt, self.windows = fmt, windows
        self.to_stdout = output == "-"
        self.path = None if self.to_stdout else Path(output)
        self.partial = None
        self.resume = resume
        self.resumed_from: Path | None = None  # the output or .partial file whose rows --resume keeps
        self.record = None  # the provenance record (`start`), written beside the .partial file
        self.done_rows: list[dict] = []
        if self.to_stdout:
            if resume:
                raise UsageError("--resume needs an output file (-o FILE), not stdout")
            return
        if overwrite and resume:
            raise UsageError("--overwrite and --resume contradict each other: give one")
        if self.path.is_dir():
            raise UsageError(f"{self.path} is a directory; give a file name for -o (e.g. {self.path / 'scores.csv'})")
        if not self.path.parent.is_dir():
            raise UsageError(f"{self.path.parent}: output folder does not exist")
        if _is_special(self.path):
            if resume:
                raise UsageError(f"{self.path} is not a regular file: nothing to resume")
            return
        if self.path.is_symlink():  # write where the link points, keep the link
            self.path = self.path.resolve()
        self.partial = partial_path(self.path)
        if resume:
            source = self.partial if self.partial.is_file() else self.path if self.path.is_file() else None
            if source is not None:
                self.resumed_from = source
                self.done_rows = read_done_rows(source, fmt, windows, extra_columns)
                if source == self.path:  # extend a finished run through a copy: the original stays whole meanwhile
                    shutil.copyfile(self.path, self.partial)
        elif not overwrite:
            if self.path.exists():
                raise UsageError(f"{self.path} already exists; pass --overwrite to replace it, or --resume to continue it")
            if self.partial.exists():
                raise UsageError(
                    f"{self.partial} holds the rows of an interrupted run; pass --resume to continue it, or "
                    "--overwrite to start again"
                )

    def start(self, record) -> None:
        """
        Takes the run's provenance record, which `open` writes beside the .partial file
        (`OUTPUT.partial.provenance.json`, renamed with it). With --resume, refuses (ResumeRefused) when the kept
        rows were made with other scoring settings.
        """
        self.record = record
        if self.partial is None:  # stdout or a special file: no place for a sidecar
            return
        if self.resumed_from is not None and self.done_rows:
            try:
                conflict = resume_conflict(self.path, read_sidecar(self.resumed_from), record)
            except ValueError as error:
                raise ResumeRefused(f"cannot resume: {error}") from None
            if conflict:
                raise ResumeRefused(conflict)

    def open(self):
        """The text handle to write to (stdout, the special file, or the .partial file)."""
        if self.to_stdout:
            return sys.stdout
        if self.partial is None:
            return open(self.path, "w", newline="", encoding="utf-8")
        handle = open(self.partial, "a" if self._continues() else "w", newline="", encoding="utf-8")
        if self.record is not None:
            try:
                write_sidecar(self.partial, self.record)
            except OSError:
                handle.close()
                raise
        return handle

    def _continues(self) -> bool:
        """--resume onto a .partial file that already holds a header (and maybe rows)."""
        return self.resume and self.partial is not None and self.partial.is_file() and self.partial.stat().st_size > 0

    def needs_header(self) -> bool:
        return not self._continues()

    def finish(self) -> None:
        """Every row is written: give the file its name."""
        if self.partial is not None:
            os.replace(self.partial, self.path)
            rename_sidecar(self.partial, self.path)


# --- scoring --------------------------------------------------------------------------------------------------------


def _ray_address(value: str | None, inputs: list[Path]) -> str | None:
    """`--ray [ADDRESS]`: argparse gives `--ray clips/` the folder as the address; hand such a path back to inputs."""
    if value is None or value == "local" or _RAY_ADDRESS.match(value):
        return value
    if Path(value).exists() or Path(value).suffix.lower() in AUDIO_SUFFIXES:
        inputs.insert(0, Path(value))
        return "local"
    raise UsageError(f"--ray: {value!r} is not a Ray address (auto, HOST:PORT or ray://HOST:PORT) nor an input path")


def _load_scorer(args):
    from transformers.utils import logging as hf_logging

    from .scorer import DistillMOSScorer

    hf_logging.disable_progress_bar()
    try:
        return DistillMOSScorer.from_pretrained(
            args.model, device=args.device, batch_size=args.batch_size, window_hop=args.window_hop,
            backend=args.backend, onnx_path=args.onnx_path, half=args.half, dtype=args.dtype, checks=args.checks,
        )
    except (ValueError, RuntimeError, OSError, ImportError, TypeError) as error:
        raise UsageError(f"could not load the model: {error}") from None


def _ray_provenance(args):
    """The record of a --ray run, from its settings: Ray's actors load the model themselves."""
    from .provenance import calibration_at, describe, find_model_location

    location = args.model or find_model_location(Path(__file__).resolve().parents[1])
    return describe(location, precision=args.dtype, backend="torch", device=args.device,
                    window_hop_s=args.window_hop, calibration=calibration_at(location))


def extra_columns(model: str | None, checks: bool) -> list[str]:
    """The columns after COLUMNS (and WINDOW_COLUMNS): mos_low/mos_high for a calibrated model, the checks' ones."""
    from .provenance import calibration_at, find_model_location

    calibrated = calibration_at(model or find_model_location(Path(__file__).resolve().parents[1])) is not None
    return (INTERVAL_COLUMNS if calibrated else []) + (CHECK_COLUMNS if checks else [])


def _score_local(scorer, files: list[str], problems: dict[str, str], channel, max_seconds=None) -> Iterator:
    from .scorer import Item

    items = (Item.failed(file, problems[file]) if file in problems else Item.file(file) for file in files)
    return scorer.score_items(items, channel, max_seconds)


def _unopenable(files: list[str]) -> dict[str, str]:
    """file -> why it cannot be opened (missing, a folder, unreadable, empty), for the files that cannot."""
    from .audio import AudioFileError, check_readable_file

    reasons = {}
    for file in files:
        try:
            check_readable_file(file)
        except AudioFileError as error:
            reasons[file] = error.reason
    return reasons


def _connect_ray(address: str) -> bool:
    """Starts or joins Ray; True when this call did (so the run shuts it down again)."""
    try:
        from .ray import init_ray
    except ImportError as error:
        raise UsageError(f"--ray needs Ray Data: pip install 'distill-mos-hf[ray]' ({error})") from None
    try:
        return init_ray(None if address == "local" else address)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UsageError(f"--ray {address}: could not start or join Ray: {error}") from None


def _score_ray(args, files: list[str], problems: dict[str, str], channel, address: str) -> Iterator:
    from .ray import score_files_with_ray

    rows = score_files_with_ray(
        [f for f in files if f not in problems], address=None if address == "local" else address,
        num_actors=args.ray_actors, model=args.model, device=args.device, batch_size=args.batch_size,
        window_hop=args.window_hop, channel=channel, windows=args.windows, dtype=args.dtype, checks=args.checks,
    )
    for file in files:
        yield FileScore(path=file, error=problems[file]) if file in problems else from_file_row(next(rows))


def _quiet_stdout() -> None:
    """After a closed pipe (`distill-mos ... | head -1`): send what is still buffered nowhere, so Python's own
    flush at exit does not print a BrokenPipeError either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or argparse's own usage errors (status 2)
        return exit_.code

    def usage_error(message: str) -> int:
        parser.print_usage(sys.stderr)
        return output_error(message)

    def output_error(message: str) -> int:  # not the arguments' fault: no usage text
        print(f"distill-mos: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    try:
        ray_address = _ray_address(args.ray, args.inputs)
        if not args.inputs and args.file_list is None:
            raise UsageError("give audio files, folders, or --file-list")
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.window_hop is not None and args.window_hop <= 0:
            raise UsageError(f"--window-hop must be a positive number of seconds, got {args.window_hop}")
        if args.ray_actors is not None and args.ray_actors < 1:
            raise UsageError(f"--ray-actors must be at least 1, got {args.ray_actors}")
        if args.ray_actors is not None and ray_address is None:
            raise UsageError("--ray-actors needs --ray")
        if args.max_duration is not None and not args.max_duration > 0:
            raise UsageError(f"--max-duration must be a positive number of seconds, got {args.max_duration}")
        if ray_address and args.max_duration is not None:
            raise UsageError("--max-duration is not supported with --ray yet; score without --ray")
        if ray_address and (args.backend != "torch" or args.onnx_path or args.half):
            raise UsageError(
                "--ray scores with the torch backend in each actor: drop --backend onnx, --onnx-path and --half "
                "(--dtype float16 runs float16 on GPUs)"
            )
        if args.file_list is not None and not args.file_list.is_file():
            raise UsageError(f"{args.file_list}: file list not found")
        if args.model is not None:
            try:
                check_model_location(args.model)
            except ValueError as error:
                raise UsageError(f"--model {error}") from None
        try:
            channel = _parse_channel(args.channel)
            problems: dict[str, str] = {}
            files = collect_files(args.inputs, args.file_list, args.recursive, problems)
        except (ValueError, OSError) as error:
            raise UsageError(str(error)) from None
        if not files:
            raise UsageError("no files to score")
        fmt = args.format or ("jsonl" if str(args.output).lower().endswith((".jsonl", ".json")) else "csv")
        extra = extra_columns(args.model, args.checks)
        output = _Output(args.output, fmt, args.windows, args.overwrite, args.resume, extra)
    except UsageError as error:
        return usage_error(str(error))
    except OSError as error:
        return usage_error(f"{args.output}: {error.strerror or error}")

    safe_csv = args.safe_csv and fmt == "csv"
    remaining = _remaining(
        files, output.done_rows, lambda file: neutralise_cell(printable_path(file)) if safe_csv else printable_path(file)
    )
    failures = sum(bool(row.get("error")) for row in output.done_rows)
    if args.resume and output.done_rows and not args.quiet:
        print(f"distill-mos: resuming: {len(files) - len(remaining)} of {len(files)} file(s) already scored",
              file=sys.stderr)
    target = "stdout" if output.to_stdout else str(output.path)
    handle = None
    progress = None
    written = 0
    ray_started = False
    try:
        # Inputs that cannot be opened at all are known before the model loads (seconds): a run whose every input is
        # missing answers at once, and the others are not decoded only to fail.
        problems.update(_unopenable([f for f in remaining if f not in problems]))
        # the model (or Ray) next: a failure to load leaves no output file behind
        if not remaining:
            results = iter(())
        elif all(file in problems for file in remaining):
            results = (FileScore(path=file, error=problems[file]) for file in remaining)
        elif ray_address:
            output.start(_ray_provenance(args))  # refuses a mismatched --resume before Ray starts
            ray_started = _connect_ray(ray_address)
            results = _score_ray(args, remaining, problems, channel, ray_address)
        else:
            scorer = _load_scorer(args)
            output.start(scorer.provenance)  # OUTPUT.partial.provenance.json; refuses a mismatched --resume
            results = _score_local(scorer, remaining, problems, channel, args.max_duration)
        handle = output.open()
        writer = _Writer(handle, fmt, args.windows, header=output.needs_header(), extra_columns=extra, safe_csv=safe_csv)
        if len(remaining) >= PROGRESS_MIN_FILES and not (args.no_progress or args.quiet):
            from tqdm import tqdm

            progress = tqdm(total=len(remaining), unit="file", file=sys.stderr, desc="distill-mos")
        say = progress.write if progress else (lambda message: print(message, file=sys.stderr))
        for result in results:
            failures += result.error is not None
            if not args.quiet and result.error:
                say(f"error: {printable_path(result.path)}: {result.error}")
            if not args.quiet and result.warning:
                say(f"warning: {printable_path(result.path)}: {result.warning}")
            writer.write(file_row(result, args.windows, extra))
            written += 1
            if progress:
                progress.update()
        if handle is not sys.stdout:
            handle.close()
        handle = None
        output.finish()
    except ResumeRefused as error:
        return output_error(str(error))
    except UsageError as error:
        return usage_error(str(error))
    except BrokenPipeError:  # the reader went away (`| head -1`): the usual convention is to stop quietly
        if output.to_stdout:
            _quiet_stdout()
            return EXIT_OK
        return output_error(f"cannot write {target}: the pipe was closed")
    except KeyboardInterrupt:
        kept = f"; the rows so far are in {output.partial}: rerun with --resume to continue" if output.partial else ""
        print(f"\ndistill-mos: interrupted after {written} of {len(remaining)} file(s){kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        if error.errno == errno.EPIPE and output.to_stdout:
            _quiet_stdout()
            return EXIT_OK
        kept = f"; the rows written so far are in {output.partial} (--resume continues)" if output.partial else ""
        return output_error(f"cannot write {target}: {error.strerror or error}{kept}")
    except Exception as error:  # noqa: BLE001 - a Ray job's failure (actors, cluster): one line, not Ray's pages
        if not ray_address:
            raise
        text = str(error).strip()
        first = text.splitlines()[0] if text else ""
        kept = f"; the rows so far are in {output.partial} (--resume continues)" if output.partial and written else ""
        return output_error(f"the Ray job failed ({type(error).__name__}: {first}){kept}")
    finally:
        if progress:
            progress.close()
        if handle is not None and handle is not sys.stdout:
            try:
                handle.close()
            except OSError:  # the same full disk again: already reported
                pass
        if ray_started:
            import ray

            ray.shutdown()
    if failures and not args.quiet:
        print(f"distill-mos: {failures} of {len(files)} file(s) could not be scored", file=sys.stderr)
    return EXIT_FAILED_FILES if failures else EXIT_OK


def dispatch(argv: list[str] | None = None) -> int:
    """`distill-mos [SUBCOMMAND] ...`: a subcommand's module when the first argument names one, else scoring."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    if any(arg == "--stream" or arg.startswith("--stream=") for arg in argv):  # live scoring: its own options
        from .stream_cli import main as stream_main

        return stream_main(argv)
    return main(argv)


def console_main() -> None:
    sys.exit(dispatch())


if __name__ == "__main__":
    console_main()
