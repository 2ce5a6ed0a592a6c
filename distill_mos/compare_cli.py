"""
`distill-mos compare-systems A/ B/ [C/ ...]`: mean MOS per system with bootstrap intervals, paired differences and
Wilcoxon tests (Holm-corrected), as CSV, JSON, a Markdown table and a plot.

Each argument is one system: a folder of audio (scored now; files pair across systems by their path relative to
the folder, A/spk1/u1.wav ~ B/spk1/u1.wav) or a scores file of ours (its files pair by their path relative to the
folder they share). A single scores file with a `system` column holds every system. Scores of folders are kept in
OUTPUT/scores/<system>.csv, so a rerun scores only files that are new or changed since.
"""

import argparse
import os
import sys
from pathlib import Path

import_error_hint = "compare-systems needs pandas, scipy and matplotlib: pip install 'distill-mos-hf[report]'"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    from .columns import DTYPE_CHOICES

    parser = argparse.ArgumentParser(
        prog="distill-mos compare-systems",
        description="Compare systems (codecs, enhancers, TTS) on the same utterances: per-system mean MOS with a "
                    "bootstrap CI, per-pair mean paired difference, its CI and a Wilcoxon signed-rank p-value "
                    "(Holm-corrected).",
        epilog="Exit status: 0 compared, 1 some file could not be scored (listed), 2 bad arguments or nothing to compare.",
    )
    parser.add_argument("systems", nargs="+", type=Path, help="one folder or scores file per system, or one scores file with a 'system' column")
    parser.add_argument("-o", "--output", type=Path, default=Path("compare-systems"), help="output folder (default: compare-systems)")
    parser.add_argument("--names", default=None, help="comma-separated system names (default: the folder or file names)")
    parser.add_argument("--key", default=None, help="with a 'system' column: the column that names the item (default: item, else the file's relative path)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples (default: 9999)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level (default: 0.95)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm's correction (default: 0.05)")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: as distill-mos)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32", help="precision (default: float32, exact)")
    parser.add_argument("--batch-size", type=int, default=8, help="files per model call (default: 8)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the output paths")
    return parser


def _relative_keys(files: list[str]) -> list[str]:
    """Paths relative to the folder they all share (its parent for a single file)."""
    folders = [os.path.dirname(os.path.abspath(f)) for f in files]
    common = os.path.commonpath(folders) if folders else ""
    return [Path(os.path.relpath(os.path.abspath(f), common)).as_posix() for f in files]


def _names(paths: list[Path], given: str | None) -> list[str]:
    if given:
        names = [n.strip() for n in given.split(",")]
        if len(names) != len(paths):
            raise ValueError(f"--names gives {len(names)} names for {len(paths)} systems")
    else:
        names = [p.resolve().name if p.is_dir() else p.stem for p in paths]
        if len(set(names)) < len(names):  # a/out and b/out: name them by their parent too
            names = [f"{p.resolve().parent.name}/{n}" for p, n in zip(paths, names)]
    if len(set(names)) < len(names):
        raise ValueError(f"two systems have the same name ({names}); give --names")
    return names


def _audio_files(folder: Path) -> list[Path]:
    from .audio import AUDIO_SUFFIXES

    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _scores_of_file(path: Path, key: str | None) -> dict[str, dict[str, float | None]]:
    """A scores file -> {system: {item: mos}}: one system (named later), or several by a `system` column."""
    from .corpus_report import load_scores

    frame = load_scores(path).frame
    if frame["file"].isna().all() and key is None and "item" not in frame.columns:
        raise ValueError(f"{path}: no file, path or item column to pair the systems' items by")
    groups = frame.groupby("system", sort=False) if "system" in frame.columns else [(None, frame)]
    out = {}
    for system, rows in groups:
        column = key or ("item" if "item" in rows.columns else None)
        if column is not None and column not in rows.columns:
            raise ValueError(f"{path}: --key {column!r}: no such column ({list(rows.columns)})")
        if column is None and rows["file"].isna().any():
            raise ValueError(f"{path}: row {rows.index[rows['file'].isna()][0] + 1} has no file to pair it by")
        items = rows[column].astype(str).tolist() if column else _relative_keys(rows["file"].tolist())
        if len(set(items)) < len(items):
            raise ValueError(f"{path}: system {system or path.stem}: an item appears twice ({column or 'file'}); each needs one score")
        out[system] = dict(zip(items, [None if v != v else float(v) for v in rows["mos"]]))
    return out


class _FolderScores:
    """Scores the audio of system folders in one model run; reuses OUTPUT/scores/<system>.csv of an earlier run."""

    def __init__(self, output: Path, args):
        self.cache_folder, self.args, self.failures = output / "scores", args, []

    def _cached(self, name: str) -> dict[str, dict]:
        import pandas as pd

        cache = self.cache_folder / f"{name.replace('/', '_')}.csv"
        if not cache.is_file():
            return {}
        written = cache.stat().st_mtime
        rows = pd.read_csv(cache, keep_default_na=False, na_values=[""], dtype={"file": str})
        return {
            r["file"]: r for r in rows.to_dict("records")
            if r.get("error") is None or r["error"] != r["error"]  # NaN: no error
            if os.path.exists(r["file"]) and os.path.getmtime(r["file"]) <= written
        }

    def score(self, folders: dict[str, Path]) -> dict[str, dict[str, float | None]]:
        import pandas as pd

        from .columns import COLUMNS

        plan, todo = {}, []
        for name, folder in folders.items():
            files = _audio_files(folder)
            if not files:
                raise ValueError(f"{folder}: no audio files in this folder (or its subfolders)")
            cached = self._cached(name)
            plan[name] = [(p.relative_to(folder).as_posix(), str(p.resolve()), cached.get(str(p.resolve()))) for p in files]
            todo += [path for _, path, row in plan[name] if row is None]
        fresh = {}
        if todo:
            from .scorer import DistillMOSScorer

            scorer = DistillMOSScorer.from_pretrained(
                self.args.model, device=self.args.device, dtype=self.args.dtype, batch_size=self.args.batch_size
            )
            for result in scorer.score_files(todo):
                fresh[result.path] = {
                    "file": result.path, "mos": result.mos, "duration_s": result.duration,
                    "sampling_rate": result.sampling_rate, "channels": result.channels,
                    "error": result.error, "warning": result.warning,
                }
        self.cache_folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for name, entries in plan.items():
            rows = [row if row is not None else fresh[path] for _, path, row in entries]
            pd.DataFrame(rows, columns=COLUMNS).to_csv(self.cache_folder / f"{name.replace('/', '_')}.csv", index=False)
            self.failures += [(name, r["file"], r["error"]) for r in rows if isinstance(r.get("error"), str)]
            out[name] = {item: (None if row["mos"] is None or row["mos"] != row["mos"] else float(row["mos"]))
                         for (item, _, _), row in zip(entries, rows)}
        return out


def load_systems(args) -> tuple[dict[str, dict[str, float | None]], list[tuple[str, str, str]]]:
    """The arguments -> ({system: {item: mos}}, [(system, file, error)] of files that could not be scored)."""
    for path in args.systems:
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
    if len(args.systems) == 1 and args.systems[0].is_file():
        by_system = _scores_of_file(args.systems[0], args.key)
        if None in by_system:
            raise ValueError(f"{args.systems[0]}: one scores file needs a 'system' column; else give one folder or file per system")
        return {str(k): v for k, v in by_system.items()}, []
    names = _names(args.systems, args.names)
    folders = {n: p for n, p in zip(names, args.systems) if p.is_dir()}
    scorer = _FolderScores(args.output, args)
    scored = scorer.score(folders) if folders else {}
    systems = {}
    for name, path in zip(names, args.systems):
        if path.is_dir():
            systems[name] = scored[name]
        else:
            by_system = _scores_of_file(path, args.key)
            if None not in by_system:
                raise ValueError(f"{path}: has a 'system' column; give it alone to compare the systems inside")
            systems[name] = by_system[None]
    return systems, scorer.failures


def write_outputs(comparison, output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    import json

    from .corpus_report import _pyplot

    paths = {name: output / name for name in ("systems.csv", "pairs.csv", "missing.csv", "comparison.json", "comparison.md", "comparison.png")}
    comparison.systems_frame().to_csv(paths["systems.csv"], index=False)
    comparison.pairs_frame().to_csv(paths["pairs.csv"], index=False)
    comparison.missing_frame().to_csv(paths["missing.csv"], index=False)
    paths["comparison.json"].write_text(json.dumps(comparison.to_dict(), indent=1) + "\n")
    paths["comparison.md"].write_text(comparison.to_markdown())
    figure = comparison.figure()
    figure.savefig(paths["comparison.png"])
    _pyplot().close(figure)
    return list(paths.values())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.output.exists() and not args.output.is_dir():
        print(f"distill-mos compare-systems: error: {args.output} is a file; -o names an output folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        from .compare import CompareError, compare_systems
        from .corpus_report import ReportError
    except ImportError as error:
        print(f"distill-mos compare-systems: error: {import_error_hint} ({error})", file=sys.stderr)
        return EXIT_USAGE
    try:
        systems, failures = load_systems(args)
        comparison = compare_systems(systems, args.seed, args.confidence, args.resamples, args.alpha)
        if comparison.pairs and not any(q.n_common for q in comparison.pairs):
            raise CompareError(
                f"no two systems have a scored file in common ({', '.join(systems)}); files pair by their path "
                f"relative to the system's folder (A/x.wav ~ B/x.wav)"
            )
        written = write_outputs(comparison, args.output)
    except (CompareError, ReportError, ValueError) as error:
        print(f"distill-mos compare-systems: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"distill-mos compare-systems: error: {error.filename or args.output}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    if not args.quiet:
        print(comparison.to_markdown())
        for name, items in comparison.missing.items():
            if items:
                shown = ", ".join(items[:10]) + (f" and {len(items) - 10} more" if len(items) > 10 else "")
                print(f"missing in {name} ({len(items)}): {shown}")
        for name, file, error in failures:
            print(f"not scored in {name}: {file}: {error}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return EXIT_FAILED if failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
