"""
Reproduce the GenSpeech figures: our table beside the paper's, and the six mfall/dir3 scores of the original README.

    python eval/reproduce_genspeech.py                          # the 10 rated clips bundled in tests/data/genspeech
    python eval/reproduce_genspeech.py --full-set /data/genspeech  # all 160 rated items, if you have the whole set

--full-set takes the folder that holds `Genspeech/LPCNet_listening_test/...` (the paths of
tests/data/genspeech/genspeech_original_labels.csv). The per-file comparison shows our scores, the ones published in
the original Distill-MOS README, and, when `distillmos` (PyPI 0.9.1) is installed, the original package's live scores.
"""

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmark  # noqa: E402 - eval/benchmark.py

GENSPEECH = benchmark.ROOT / "tests" / "data" / "genspeech"
LABELS = GENSPEECH / "labels.csv"
PUBLISHED = GENSPEECH / "reference_model_predictions_distillmos.csv"
FULL_LABELS = GENSPEECH / "genspeech_original_labels.csv"


def full_set_labels(root: Path, out_dir: Path) -> Path:
    """genspeech_original_labels.csv with its paths under `root` -> a benchmark CSV (file, mos, condition)."""
    target = out_dir / "genspeech_full_labels.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    with FULL_LABELS.open(newline="") as handle, target.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "mos", "condition"])
        for row in csv.DictReader(handle):
            wave = Path(row["Test_Wave"])
            test = wave.parts[1] if len(wave.parts) > 2 else ""
            writer.writerow([str((root / wave).resolve()), row["MOS"], f"{test}/{wave.stem}"])
    return target


def original_live_scores(paths: list[Path]) -> list[float] | None:
    """The original package's scores, computed as its command line tool does (first channel, torchaudio resample)."""
    try:
        import distillmos
    except ImportError:
        return None
    import torch
    import torchaudio

    model = distillmos.ConvTransformerSQAModel().eval()
    scores = []
    for path in paths:
        x, sr = torchaudio.load(str(path))
        x = x[0, None, :]
        if sr != 16000:
            x = torchaudio.transforms.Resample(sr, 16000)(x)
        with torch.no_grad():
            scores.append(model(x).item())
    return scores


def _key(file: str) -> str:
    parts = Path(file).parts
    return "/".join(parts[parts.index("LPCNet_listening_test"):]) if "LPCNet_listening_test" in parts else file


def per_file_table(predictions_csv: Path, out_dir: Path) -> str:
    with predictions_csv.open(newline="") as handle:  # keyed by the path below audio/ or Genspeech/
        ours = {_key(row["file"]): row for row in csv.DictReader(handle)}
    with PUBLISHED.open(newline="") as handle:
        published = [(row["file"], float(row["distillmos_expected"])) for row in csv.DictReader(handle)]
    live = original_live_scores([GENSPEECH / file for file, _ in published])
    header = ["file (mfall/dir3)", "human MOS", "ours", "original README", "original distillmos 0.9.1 (live)", "ours - live (abs)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for index, (file, expected) in enumerate(published):
        row = ours.get(_key(file))
        our = float(row[benchmark.OURS]) if row and row[benchmark.OURS] else None
        human = row["human_mos"] if row and row["human_mos"] else "unrated"
        original = live[index] if live else None
        diff = abs(our - original) if our is not None and original is not None else None
        rows.append([file, human, our, expected, original, diff])
        lines.append("| " + " | ".join([
            Path(file).name, human if human == "unrated" else f"{float(human):.2f}", benchmark._fmt(our, 4),
            f"{expected:.2f}", "not installed" if live is None else benchmark._fmt(original, 4),
            "" if diff is None else f"{diff:.1e}",
        ]) + " |")
    with (out_dir / "per_file_dir3.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "human_mos", "ours", "original_readme", "original_live", "abs_diff_live"])
        writer.writerows([[("" if v is None else v) for v in row] for row in rows])
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=benchmark.EVAL_DIR / "results" / "genspeech", help="output folder (default: eval/results/genspeech)")
    parser.add_argument("--full-set", type=Path, help="folder holding Genspeech/LPCNet_listening_test/... (all 160 rated items)")
    parser.add_argument("--peers", action="append", default=[], help="also score with: dnsmos")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from distill_mos import DistillMOSScorer

    labels = full_set_labels(args.full_set, args.out) if args.full_set else LABELS
    # keep_unrated: the reference clips are scored too (the original README lists ref.wav), but not in the figures
    dataset = benchmark.load_csv(labels, keep_unrated=True)
    scorer = DistillMOSScorer.from_pretrained(device=args.device)
    peers = [p.strip() for spec in args.peers for p in spec.split(",") if p.strip()]
    results = benchmark.run_benchmark(
        dataset, args.out, name=f"GenSpeech ({'full set' if args.full_set else 'bundled subset, tests/data/genspeech'})",
        scorer=scorer, paper_set="GenSpeech", peers=peers, system_column="condition", source=str(labels), quiet=True,
    )
    print((args.out / "results.md").read_text())
    print("Per-file scores, GenSpeech LPCNet_listening_test/mfall/dir3 (the original README's example):\n")
    print(per_file_table(args.out / "predictions.csv", args.out))
    print(f"Wrote {args.out}/ (results.json, results.md, predictions.csv, scatter.png, per_file_dir3.csv)")
    return 1 if results["n_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
