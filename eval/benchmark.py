"""
Benchmark Distill-MOS against human ratings: PCC, SRCC, KTAU and RMSE, per utterance and per system.

    python eval/benchmark.py --labels tests/data/genspeech/labels.csv --out results/genspeech
    python eval/benchmark.py --dataset path/saved_with_save_to_disk --out results/mine
    python eval/benchmark.py --dataset user/hub-dataset --split test --mos-column mos --out results/hub
    python eval/benchmark.py --audiofolder clips/ --out results/clips          # clips/metadata.csv: file_name,mos
    python eval/benchmark.py --labels labels.csv --peers dnsmos --out results/with-dnsmos

The labelled set is scored through `distill_mos.add_mos_column` (`datasets.map`), the path the command line tool
shares. Written to --out: results.json, results.md (the table, also printed), predictions.csv, scatter.png.
"""

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

EVAL_DIR = Path(__file__).resolve().parent
ROOT = EVAL_DIR.parent
for _path in (ROOT, EVAL_DIR):  # the model code lives in the repository root; peers.py next to this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

METRIC_DIR = EVAL_DIR / "mos_metrics"
PAPER_PCC = ROOT / "tests" / "data" / "reference" / "paper_pcc.csv"
PAPER_SOURCE = "Stahl and Gamper, ICASSP 2025 (arXiv 2502.05356), tests/data/reference/README.md"
OURS = "Distill-MOS"
PAPER_ROWS = {OURS: "Distill-MOS v7 (released)", "DNSMOS P.808": "DNSMOS P.808", "DNSMOS P.835": "DNSMOS P.835"}
# Label-source loading lives in the library (shared with `distill_mos.finetune`); re-exported under its old names.
from distill_mos.labels import (  # noqa: E402 - after the sys.path set-up above
    AUDIO,
    ID_COLUMNS,
    ITEM,
    LABEL,
    MOS_COLUMNS,
    SYSTEM,
    SYSTEM_COLUMNS,
    LabelSourceError,
    load_any_dataset,
    load_csv,
    normalise_dataset,
)

PRED = "predicted_mos"  # the column of our predictions in the normalised set


class BenchmarkError(ValueError):
    """A usage problem (no paper figures for a set, nothing scored, ...): printed without a traceback."""


# --- scoring ----------------------------------------------------------------------------------------------------


def score_dataset(dataset, scorer, channel: str | int = "first", batch_size: int = 16, peers=()) -> dict[str, list]:
    """Scores the normalised set: {estimator name: per-row scores (None where it failed)}, plus per-row errors."""
    from distill_mos import add_mos_column

    def ours(part):
        scored = add_mos_column(part, scorer, audio_column=AUDIO, column=PRED, channel=channel, batch_size=batch_size,
                                keep_in_memory=True, remove_columns=[AUDIO])
        return scored[PRED], scored[f"{PRED}_error"]

    # add_mos_column decodes row by row and reports unreadable or missing files as errors, never raising.
    predictions, errors = ours(dataset)
    out = {OURS: predictions, "_errors": errors}
    scored_rows = [i for i, p in enumerate(predictions) if p is not None]  # peers skip what we could not decode
    for peer in peers:
        peer_scores = peer.score_dataset(dataset.select(scored_rows), scorer, channel=channel, audio_column=AUDIO)
        for name, values in peer_scores.items():
            out[name] = [None] * len(predictions)
            for row, value in zip(scored_rows, values):
                out[name][row] = value
    return out


# --- figures ----------------------------------------------------------------------------------------------------


def load_metric():
    """Our `evaluate` metric module (works offline: it is loaded from eval/mos_metrics)."""
    import evaluate

    return evaluate.load(str(METRIC_DIR))


def paper_reference(set_name: str | None) -> dict | None:
    """The paper's published PCC of each estimator on `set_name` (a column of paper_pcc.csv)."""
    if not set_name or not PAPER_PCC.is_file():
        return None
    with PAPER_PCC.open(newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    column = next((c for c in rows["n_clips"] if _norm(c) == _norm(set_name)), None)
    if column is None:
        raise BenchmarkError(f"the paper published no figures for {set_name!r}; its sets are "
                             f"{[c for c in rows['n_clips'] if c not in ('model', 'params_M')]}")
    pcc = {ours: float(rows[row][column]) for ours, row in PAPER_ROWS.items() if row in rows and rows[row][column]}
    return {"set": column, "n": int(float(rows["n_clips"][column])), "pcc": pcc, "source": PAPER_SOURCE}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def detect_paper_set(*names: str) -> str | None:
    """The paper_pcc.csv column whose name equals one of the folder names / hub id parts given (case, '-', '_' ignored)."""
    if not PAPER_PCC.is_file():
        return None
    with PAPER_PCC.open(newline="") as handle:
        columns = [c for c in next(csv.reader(handle)) if c not in ("model", "params_M", "weighted_mean", "unweighted_mean")]
    wanted = {_norm(c): c for c in columns}
    for name in names:
        for part in reversed(re.split(r"[/\\]", str(name))):
            if _norm(part) in wanted:
                return wanted[_norm(part)]
    return None


def compute_figures(scores: dict[str, list], labels: list, systems: list | None, mos_scale: bool | None) -> dict:
    """Metric results per estimator, on the rows every estimator scored and that have a label."""
    metric = load_metric()
    names = [name for name in scores if not name.startswith("_")]
    rows = [i for i, label in enumerate(labels)
            if label is not None and all(scores[n][i] is not None and math.isfinite(scores[n][i]) for n in names)]
    figures = {}
    for name in names:
        figures[name] = metric.compute(
            predictions=[scores[name][i] for i in rows],
            references=[labels[i] for i in rows],
            systems=[systems[i] for i in rows] if systems else None,
            mos_scale=mos_scale,
        )
    return figures


# --- reports ----------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def markdown_table(results: dict) -> str:
    figures, paper = results["estimators"], results.get("paper")
    header = ["estimator", "n", "PCC", "SRCC", "KTAU", "RMSE"]
    if paper:
        header.append(f"paper PCC ({paper['set']}, n={paper['n']})")
    lines = [f"### {results['name']}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, fig in figures.items():
        cells = [name + (" (ours)" if name == OURS else ""), str(fig["n"]), _fmt(fig["pcc"]), _fmt(fig["srcc"]),
                 _fmt(fig["ktau"]), _fmt(fig["rmse"])]
        if paper:
            cells.append(_fmt(paper["pcc"].get(name), 2))
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(figures.values()))
    if "n_systems" in first:
        lines += ["", f"System level (mean per {results['system_column'] or 'system'}, {first['n_systems']} systems):", "",
                  "| estimator | systems | PCC | SRCC | KTAU | RMSE |", "|---|---|---|---|---|---|"]
        for name, fig in figures.items():
            lines.append("| " + " | ".join([name, str(fig["n_systems"]), _fmt(fig["system_pcc"]), _fmt(fig["system_srcc"]),
                                             _fmt(fig["system_ktau"]), _fmt(fig["system_rmse"])]) + " |")
    notes = []
    if not first["mos_scale"]:
        low, high = results["label_range"]
        notes.append(f"RMSE is reported only for labels on the MOS 1..5 scale; these labels span {low:g}..{high:g}, "
                     "so only the correlations are given.")
    if paper:
        if paper["n"] != first["n"]:
            notes.append(f"The paper's PCC is on the full {paper['set']} test set ({paper['n']} clips); ours is on the "
                         f"{first['n']} clips given here, so the two need not agree.")
        notes.append(f"Paper figures: {paper['source']}.")
    if results["n_failed"]:
        notes.append(f"{results['n_failed']} item(s) could not be scored and are left out (see predictions.csv).")
    if results["n_unrated"]:
        notes.append(f"{results['n_unrated']} unrated item(s) were scored but are not in the figures.")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def scatter_plot(path: Path, scores: dict[str, list], labels: list, results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["estimators"])
    import textwrap

    fig, axes = plt.subplots(1, len(names), figsize=(max(5.0, 4.2 * len(names)), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        pairs = [(l, p) for l, p in zip(labels, scores[name]) if l is not None and p is not None]
        x, y = (np.array(v, dtype=float) for v in zip(*pairs)) if pairs else (np.array([]), np.array([]))
        ax.scatter(x, y, s=18, alpha=0.75)
        if results["estimators"][name]["mos_scale"]:
            ax.plot([1, 5], [1, 5], color="grey", lw=0.8, ls="--")
            ax.set_xlim(0.8, 5.2)
        ax.set_ylim(0.8, 5.2)
        ax.set_xlabel("human MOS")
        ax.set_ylabel(f"{name} prediction")
        fig_ = results["estimators"][name]
        ax.set_title(f"{name}: PCC {_fmt(fig_['pcc'])}, n={fig_['n']}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(textwrap.fill(results["name"], 12 * max(5, 4 * len(names))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# --- the whole run ----------------------------------------------------------------------------------------------


def run_benchmark(dataset, out_dir: str | Path, *, name: str, scorer=None, paper_set: str | None = None,
                  peers=(), channel: str | int = "first", batch_size: int = 16, mos_scale: bool | None = None,
                  system_column: str | None = None, source: str | None = None, quiet: bool = False) -> dict:
    """
    Scores a normalised set (see `load_csv` / `normalise_dataset`), writes the reports to `out_dir` and returns
    the content of results.json: `n, pcc, srcc, ktau, mse, rmse` of Distill-MOS (and `n_systems, system_*` when
    the set has system ids), `estimators` (every estimator's figures), `paper` (published PCC) and the failures.
    """
    from distill_mos import DistillMOSScorer

    peer_objects = [_make_peer(p) if isinstance(p, str) else p for p in peers]
    scorer = scorer or DistillMOSScorer.from_pretrained()
    scores = score_dataset(dataset, scorer, channel=channel, batch_size=batch_size, peers=peer_objects)
    labels, items = dataset[LABEL], dataset[ITEM]
    systems = dataset[SYSTEM] if SYSTEM in dataset.column_names else None
    rated = [label for label in labels if label is not None]
    if not rated:
        raise BenchmarkError("no row has a human MOS label")
    figures = compute_figures(scores, labels, systems, mos_scale)
    if figures[OURS]["n"] == 0:
        raise BenchmarkError("no item could be scored: " + "; ".join(sorted({e for e in scores["_errors"] if e})[:3]))
    paper = paper_reference(paper_set)
    estimators = [n for n in scores if not n.startswith("_")]
    failed = [{"item": items[i], "error": scores["_errors"][i] or "a peer estimator failed"}
              for i in range(len(items)) if any(scores[n][i] is None for n in estimators)]
    results = {
        **{k: v for k, v in figures[OURS].items()},
        "name": name,
        "source": source or name,
        "system_column": system_column if systems else None,
        "label_range": [min(rated), max(rated)],
        "n_items": len(items),
        "n_unrated": len(labels) - len(rated),
        "n_failed": len(failed),
        "failed": failed,
        "estimators": figures,
        "paper": paper,
        "model": str(getattr(scorer.model, "name_or_path", "") or ""),
    }
    results = _json_safe(results)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (out / "results.md").write_text(table)
    with (out / "predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "human_mos", "system", *estimators, "error"])
        for i, item in enumerate(items):
            writer.writerow([item, "" if labels[i] is None else labels[i], systems[i] if systems else "",
                             *("" if scores[n][i] is None else scores[n][i] for n in estimators),
                             scores["_errors"][i] or ""])
    scatter_plot(out / "scatter.png", scores, labels, results)
    if not quiet:
        print(table)
        print(f"Wrote {out / 'results.json'}, results.md, predictions.csv and scatter.png")
    return results


def _make_peer(name: str):
    from peers import make_peer  # eval/peers.py, next to this file

    return make_peer(name)


# --- command line -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score a labelled speech set with Distill-MOS and report its agreement with the human MOS "
                    "(PCC, SRCC, KTAU, RMSE; per system too when system ids are given).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="CSV with 'file' (relative to the CSV) and 'mos' columns; "
                        "rows with an empty mos are skipped; an optional 'condition' column gives system ids")
    source.add_argument("--dataset", help="Hugging Face dataset: a Hub id, or a folder written by save_to_disk "
                        "(or an audiofolder)")
    source.add_argument("--audiofolder", type=Path, help="folder of audio files with metadata.csv (file_name, mos, ...)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md, predictions.csv, scatter.png")
    parser.add_argument("--split", help="dataset split (default: the only one, else 'test')")
    parser.add_argument("--config", help="dataset configuration name (Hub datasets)")
    parser.add_argument("--audio-column", help="dataset audio column (default: the first Audio column)")
    parser.add_argument("--mos-column", help=f"human MOS column (default: 'mos' for CSV; for datasets the first of {list(MOS_COLUMNS)})")
    parser.add_argument("--file-column", default="file", help="CSV column with the audio paths (default: file)")
    parser.add_argument("--system-column", default="auto",
                        help=f"system / condition id column for system-level figures (default: the first of "
                             f"{list(SYSTEM_COLUMNS)} present; 'none' for utterance level only)")
    parser.add_argument("--id-column", help="dataset column naming each item in predictions.csv (default: file name)")
    parser.add_argument("--name", help="name of the set in the table (default: from the path or id)")
    parser.add_argument("--paper-set", default="auto",
                        help="paper_pcc.csv column to show the published PCC of (e.g. GenSpeech, TCD-VoIP; default: "
                             "matched from the folder or dataset name; 'none' to leave out)")
    parser.add_argument("--peers", action="append", default=[], metavar="NAME",
                        help="also score with another estimator on the same audio: dnsmos (DNSMOS P.808 and P.835 "
                             "from the speechmos package; pip install speechmos librosa onnxruntime requests)")
    parser.add_argument("--scale", choices=["auto", "mos", "other"], default="auto",
                        help="label scale: mos (1..5; RMSE reported), other (correlations only), auto (detect)")
    parser.add_argument("--keep-unrated", action="store_true", help="also score rows without a label (listed in predictions.csv, not in the figures)")
    parser.add_argument("--channel", default="first", help="multi-channel audio: first (default, as the original), mean, or an index")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per datasets.map batch (default 16)")
    parser.add_argument("--model", help="model folder or Hub id (default: this checkout)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except (BenchmarkError, LabelSourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _main(args) -> int:
    from distill_mos import DistillMOSScorer

    system_column = None if args.system_column in ("none", "") else args.system_column
    if args.labels:
        dataset = load_csv(args.labels, args.file_column, args.mos_column or "mos", system_column, args.keep_unrated)
        source = str(args.labels)
        names = [str(args.labels.resolve().parent)]
        if system_column == "auto":
            with args.labels.open(newline="") as handle:
                header = next(csv.reader(handle), [])
            system_column = next((c for c in SYSTEM_COLUMNS if c in header), None)
    else:
        source = str(args.dataset or args.audiofolder)
        raw = load_any_dataset(source, args.split, args.config, audiofolder=args.audiofolder is not None)
        if system_column == "auto":
            system_column = next((c for c in SYSTEM_COLUMNS if c in raw.column_names), None)
        dataset = normalise_dataset(raw, args.audio_column, args.mos_column, system_column, args.id_column, args.keep_unrated)
        names = [str(Path(source).resolve()) if Path(source).exists() else source]
    paper_set = None if args.paper_set == "none" else (detect_paper_set(*names) if args.paper_set == "auto" else args.paper_set)
    name = args.name or (f"{paper_set}: {source}" if paper_set else source)
    channel = int(args.channel) if args.channel.isdigit() else args.channel
    scorer = DistillMOSScorer.from_pretrained(args.model, device=args.device)
    peers = [p.strip() for spec in args.peers for p in spec.split(",") if p.strip()]
    results = run_benchmark(dataset, args.out, name=name, scorer=scorer, paper_set=paper_set, peers=peers,
                            channel=channel, batch_size=args.batch_size,
                            mos_scale={"auto": None, "mos": True, "other": False}[args.scale],
                            system_column=system_column, source=source)
    if results["n_failed"]:
        for failure in results["failed"]:
            print(f"failed: {failure['item']}: {failure['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
