"""`distill-mos report SCORES -o report.html`: one HTML page that shows what a set of scores says about a corpus."""

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-mos report",
        description="Write a self-contained HTML report of a scores file: MOS histogram, hours and clips kept at "
                    "each threshold, per-group table, listening samples, errors and warnings by reason, provenance.",
    )
    parser.add_argument(
        "scores", type=Path,
        help="distill-mos output (.csv/.jsonl), Ray Parquet (file or folder) or a scored datasets save_to_disk folder",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="HTML file (default: report.html)")
    parser.add_argument(
        "--audio-root", type=Path, default=None,
        help="folder that relative file paths in SCORES are relative to (default: the folder of SCORES)",
    )
    parser.add_argument("--group-by", default=None, metavar="COLUMN|folder", help="per-group table: folder, or a column (e.g. speaker)")
    parser.add_argument("--threshold", type=float, default=3.0, help="per-group share under this MOS (default: 3.0)")
    parser.add_argument(
        "--embed-audio", action="store_true",
        help="embed the listening samples (clips up to 30 s) in the HTML instead of linking to them",
    )
    parser.add_argument("--samples-per-band", type=int, default=3, help="listening samples per MOS band (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="picks the listening samples (default: 0)")
    parser.add_argument("--column", default="mos", help="the MOS column (default: mos)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.output.is_dir():
        print(f"distill-mos report: error: {args.output} is a folder; give the HTML file to write", file=sys.stderr)
        return EXIT_USAGE
    from .corpus_report import ReportError, report, write_html

    try:
        r = report(args.scores, args.group_by, args.threshold, args.audio_root, args.column, args.samples_per_band, args.seed)
        write_html(r, args.output, embed_audio=args.embed_audio)
    except ReportError as error:
        print(f"distill-mos report: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"distill-mos report: error: cannot write {args.output}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    summary = f"{r.scored:,} of {r.rows:,} clips scored, mean MOS {r.mean_mos:.2f}" if r.scored else "; ".join(r.notes)
    print(f"wrote {args.output} ({summary})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
