"""
`distill-mos report` and `distill_mos.report`: every figure recomputed here from the scores by other means (loops
over the rows, not the module's pandas), every input format we write, bad input, and the HTML page opened in
headless Debian Chromium (images drawn and not blank, audio players loading their clips).
"""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import ROOT, require_module

pd = require_module("pandas")
require_module("matplotlib")

from distill_mos import corpus_report  # noqa: E402
from distill_mos.corpus_report import THRESHOLDS, ReportError, histogram_figure, load_scores, write_html  # noqa: E402
from distill_mos.report_cli import main as report_main  # noqa: E402

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
FIELDS = ["file", "mos", "duration_s", "sampling_rate", "channels", "error", "warning"]


def _clip(path: Path, seconds: float = 0.5, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))).astype("float32"), 16000)
    return path


def _rows(n=60, seed=1):
    """CLI rows over three folders: MOS spread over 1..5, durations 1..20 s, two errors and a warning."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        folder = ("spk_a", "spk_b", "spk_c")[i % 3]
        mos = float(np.clip(rng.normal({"spk_a": 2.4, "spk_b": 3.3, "spk_c": 4.1}[folder], 0.5), 1.0, 5.0))
        rows.append({"file": f"{folder}/clip{i:03d}.wav", "mos": round(mos, 6), "duration_s": round(float(rng.uniform(1, 20)), 4),
                     "sampling_rate": 16000, "channels": 1, "error": None, "warning": None})
    rows[5].update(mos=None, duration_s=None, error="not a readable audio file (Error opening 'spk_c/clip005.wav': Format not recognised.)")
    rows[7].update(mos=None, duration_s=None, error="not a readable audio file (Error opening 'spk_b/clip007.wav': Format not recognised.)")
    rows[11].update(mos=None, duration_s=None, error="file is empty (0 bytes)")
    rows[13]["warning"] = "audio is very short (0.53 s); the model scores 7.68 s windows, so this score is less reliable"
    return rows


def _write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in FIELDS})
    return path


@pytest.fixture
def corpus(tmp_path):
    rows = _rows()
    for i, row in enumerate(rows):
        if row["error"] is None:
            _clip(tmp_path / "audio" / row["file"], seed=i)
    return rows, _write_csv(tmp_path / "audio" / "scores.csv", rows)


def test_figures_recomputed_from_the_rows(corpus):
    rows, path = corpus
    r = corpus_report.report(path, group_by="folder", group_threshold=3.0)
    scored = [row for row in rows if row["mos"] is not None]
    assert (r.rows, r.scored, r.failed, r.warned) == (60, 57, 3, 1)
    assert r.mean_mos == pytest.approx(sum(row["mos"] for row in scored) / 57)
    assert r.hours_scored == pytest.approx(sum(row["duration_s"] for row in scored) / 3600)

    for t, table_row in zip(THRESHOLDS, r.kept_table.itertuples()):
        kept = [row for row in scored if row["mos"] >= t]
        assert table_row.threshold == t
        assert table_row.clips_kept == len(kept)
        assert table_row.hours_kept == pytest.approx(sum(row["duration_s"] for row in kept) / 3600)
        assert table_row.share_clips_kept == pytest.approx(len(kept) / 57)
        assert table_row.share_hours_kept == pytest.approx(sum(row["duration_s"] for row in kept) / sum(row["duration_s"] for row in scored))
    # the curve: every 0.05, same rule (a threshold equal to a clip's MOS keeps it)
    curve = r.kept_curve.set_index("threshold")
    for t in (1.0, 2.2, 3.65, 5.0):
        assert curve.loc[t, "clips_kept"] == sum(row["mos"] >= t for row in scored)
    edge = scored[0]["mos"]
    assert corpus_report.kept_at(np.array([edge]), np.array([3600.0]), np.array([edge]))["hours_kept"][0] == 1.0

    for bin_row in r.histogram.itertuples():
        last = bin_row.bin_end == 5.0
        assert bin_row.clips == sum(bin_row.bin_start <= row["mos"] < bin_row.bin_end or (last and row["mos"] == 5.0) for row in scored)
    assert r.histogram["clips"].sum() == 57

    groups = r.groups.set_index("group")
    for folder in ("spk_a", "spk_b", "spk_c"):
        members = [row for row in rows if row["file"].startswith(folder + "/")]
        ok = [row for row in members if row["mos"] is not None]
        assert groups.loc[folder, "clips"] == len(members)
        assert groups.loc[folder, "errors"] == len(members) - len(ok)
        assert groups.loc[folder, "mean_mos"] == pytest.approx(sum(row["mos"] for row in ok) / len(ok))
        assert groups.loc[folder, "hours"] == pytest.approx(sum(row["duration_s"] for row in ok) / 3600)
        assert groups.loc[folder, "share_under"] == pytest.approx(sum(row["mos"] < 3.0 for row in ok) / len(ok))
    assert list(r.groups["group"]) == ["spk_a", "spk_b", "spk_c"]  # worst mean first

    errors = r.errors.set_index("reason")
    assert errors.loc["not a readable audio file", "clips"] == 2
    assert errors.loc["file is empty", "clips"] == 1
    assert list(r.warnings["reason"]) == ["audio is very short"]

    samples = r.samples
    for kind, (low, high) in zip(("1.0-2.0", "2.0-3.0", "3.0-4.0", "4.0-5.0"), corpus_report.BANDS):
        band = samples[samples["kind"] == kind]
        assert len(band) == min(3, sum(low <= row["mos"] < high or (high == 5.0 and row["mos"] == 5.0) for row in scored))
        assert all(low <= m <= high for m in band["mos"])
    ordered = sorted(row["mos"] for row in scored)
    assert list(samples[samples["kind"] == "worst"]["mos"]) == pytest.approx(ordered[:5])
    assert list(samples[samples["kind"] == "best"]["mos"]) == pytest.approx(ordered[::-1][:5])
    again = corpus_report.report(path, group_by="folder")
    assert again.samples.equals(samples)  # seeded


def test_group_by_column_and_formats(tmp_path):
    """JSON Lines (CLI), Ray's Parquet with provenance in its metadata, a sidecar provenance file."""
    pa = require_module("pyarrow")
    import pyarrow.parquet as pq

    rows = _rows(30)
    for i, row in enumerate(rows):
        row["speaker"] = "s1" if i < 10 else "s2"
    jsonl = tmp_path / "scores.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    r = corpus_report.report(jsonl, group_by="speaker")
    s1 = [row["mos"] for row in rows[:10] if row["mos"] is not None]
    assert r.groups.set_index("group").loc["s1", "mean_mos"] == pytest.approx(sum(s1) / len(s1))
    assert r.provenance is None
    assert "Provenance" not in corpus_report.to_html(r)

    (tmp_path / "scores.jsonl.provenance.json").write_text(json.dumps({"model": "distill-mos-v7", "dtype": "float32", "window_hop": None}))
    shown = corpus_report.to_html(corpus_report.report(jsonl))
    assert "Provenance of the scores" in shown and "distill-mos-v7" in shown

    table = pa.table({
        "path": [row["file"] for row in rows], "mos": [row["mos"] for row in rows],
        "mos_error": [row["error"] for row in rows], "mos_warning": [row["warning"] for row in rows],
        "duration_s": [row["duration_s"] for row in rows],
    }).replace_schema_metadata({"distill_mos.provenance": json.dumps({"model": "ray-model", "precision": "bfloat16"})})
    folder = tmp_path / "ray_out"
    folder.mkdir()
    pq.write_table(table.slice(0, 15), folder / "part-0.parquet")
    pq.write_table(table.slice(15), folder / "part-1.parquet")
    ray = corpus_report.report(folder)
    assert (ray.rows, ray.scored, ray.failed) == (r.rows, r.scored, r.failed)
    assert ray.kept_table["hours_kept"].tolist() == pytest.approx(r.kept_table["hours_kept"].tolist())
    assert ray.provenance == {"model": "ray-model", "precision": "bfloat16"}


def test_report_of_a_scored_dataset(tmp_path):
    """`distill_mos.report(ds)` for add_mos_column users: durations read from the audio headers."""
    datasets = require_module("datasets")
    import distill_mos

    paths = [str(_clip(tmp_path / f"c{i}.wav", seconds=s)) for i, s in enumerate((1.0, 2.0, 3.0))]
    ds = datasets.Dataset.from_dict({"audio": paths, "mos": [2.0, None, 4.0], "mos_error": [None, "no such file", None],
                                     "speaker": ["a", "a", "b"]}).cast_column("audio", datasets.Audio())
    r = distill_mos.report(ds, group_by="speaker")
    assert (r.rows, r.scored, r.failed) == (3, 2, 1)
    assert r.hours_scored == pytest.approx(4.0 / 3600)
    assert r.kept_table.set_index("threshold").loc[3.0, "hours_kept"] == pytest.approx(3.0 / 3600)
    ds.save_to_disk(str(tmp_path / "saved"))
    saved = corpus_report.report(tmp_path / "saved")
    assert saved.kept_table.equals(r.kept_table)
    assert "c2.wav" in corpus_report.to_html(saved, tmp_path / "r.html")
    with pytest.raises(ReportError, match="streaming IterableDataset"):
        distill_mos.report(ds.to_iterable_dataset())


def test_plain_scores_for_the_space():
    figure = histogram_figure([3.1, None, 4.2, 4.4])
    (stairs,) = figure.axes[0].patches
    counts = stairs.get_data().values
    assert counts.sum() == 3 and counts[np.searchsorted(corpus_report.HISTOGRAM_BINS, 4.2, side="right") - 1] == 1
    assert "3 clips" in figure.axes[0].get_title()
    r = corpus_report.report([3.1, None, 4.2, 4.4])
    assert r.scored == 3 and r.rows == 4 and not r.has_durations
    assert math.isnan(r.kept_table["hours_kept"][0])
    assert any("no durations" in note for note in r.notes)


def test_bad_input(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    r = corpus_report.report(empty)
    assert r.rows == 0 and "no rows" in r.notes[0]
    assert report_main([str(empty), "-o", str(tmp_path / "e.html"), "--group-by", "folder"]) == 0
    assert "no rows" in (tmp_path / "e.html").read_text()

    header_only = _write_csv(tmp_path / "header.csv", [])
    assert corpus_report.report(header_only).rows == 0

    only_errors = _write_csv(tmp_path / "errors.csv", [r for r in _rows() if r["error"]])
    assert report_main([str(only_errors), "-o", str(tmp_path / "oe.html"), "--group-by", "folder"]) == 0
    page = (tmp_path / "oe.html").read_text()
    assert "No clip was scored: all 3 rows are errors" in page and "not a readable audio file" in page

    no_mos = tmp_path / "no_mos.csv"
    no_mos.write_text("file,score\na.wav,3.2\n")
    with pytest.raises(ReportError, match=r"no_mos.csv: no 'mos' column \(found \['file', 'score'\]\)"):
        load_scores(no_mos)
    assert report_main([str(no_mos), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "distill-mos report: error:" in err and "no 'mos' column" in err and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()

    not_number = tmp_path / "nan.csv"
    not_number.write_text("file,mos\na.wav,3.2\nb.wav,good\n")
    with pytest.raises(ReportError, match=r"row 2: mos is 'good', not a number"):
        load_scores(not_number)
    with pytest.raises(ReportError, match="--group-by 'speaker': no such column"):
        corpus_report.report(_write_csv(tmp_path / "ok.csv", _rows(20)), group_by="speaker")
    assert report_main([str(tmp_path / "nowhere.csv")]) == 2
    assert "nowhere.csv: no such file" in capsys.readouterr().err


def _page_checks(page) -> dict:
    """Every <img> drawn (naturalWidth > 0, pixels not all one colour); every <audio> loaded its clip (duration > 0)."""
    return page.evaluate("""async () => {
        const images = [...document.images].map(img => {
            const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            const colours = new Set(); for (let i = 0; i < d.length; i += 4 * 97) colours.add(d[i] << 16 | d[i+1] << 8 | d[i+2]);
            return {width: img.naturalWidth, colours: colours.size};
        });
        const audio = await Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(resolve => {
            const done = () => resolve({src: a.getAttribute('src').slice(0, 40), duration: a.duration, error: a.error && a.error.code});
            if (a.readyState >= 1) return done();
            a.addEventListener('loadedmetadata', done); a.addEventListener('error', done); a.load();
        })));
        return {images, audio};
    }""")


@pytest.mark.slow
def test_html_in_chromium(corpus, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if not (chromium and sync_playwright):
        if os.environ.get("DISTILL_MOS_REQUIRE_BROWSER") == "1":
            pytest.fail("needs the playwright package and a chromium binary (apt install chromium)")
        pytest.skip("needs the playwright package and a chromium binary (apt install chromium)")
    rows, scores = corpus
    out = tmp_path / "pages"
    out.mkdir()
    linked = out / "linked.html"
    # through the console script, as users run it: relative links from pages/ to audio/spk_x/...
    done = subprocess.run([sys.executable, "-m", "distill_mos.cli", "report", str(scores), "--group-by", "folder",
                           "-o", str(linked)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "57 of 60 clips scored" in done.stdout
    embedded = write_html(corpus_report.report(scores), out / "embedded.html", embed_audio=True)
    page_text = linked.read_text()
    assert 'src="../audio/spk_' in page_text and "data:audio" not in page_text
    assert "data:audio/x-wav;base64," in embedded.read_text() or "data:audio/wav;base64," in embedded.read_text()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            for html_file in (linked, embedded):
                page.goto(html_file.as_uri())
                found = _page_checks(page)
                assert len(found["images"]) == 2, found
                assert all(i["width"] > 0 and i["colours"] > 3 for i in found["images"]), found
                assert len(found["audio"]) >= 12, found
                assert all(a["error"] is None and a["duration"] == pytest.approx(0.5, abs=0.05) for a in found["audio"]), found
                assert page.locator("h2", has_text="By folder").count() == (html_file == linked)
        finally:
            browser.close()

    # a clip gone since scoring: said so in place of a player, not a dead link
    worst = corpus_report.report(scores).samples.query("kind == 'worst'")["file"].iat[0]
    (scores.parent / worst).unlink()
    gone = corpus_report.to_html(corpus_report.report(scores), out / "gone.html")
    assert "audio not found" in gone and f'src="../audio/{worst}"' not in gone


def test_readme_section_python_runs(tmp_path, monkeypatch):
    """The README's "Reports and system comparison" Python blocks, as written, on a scores.csv in the working folder."""
    import re

    section = (ROOT / "README.md").read_text().split("## Reports and system comparison", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "scores.csv", _rows())
    for block in blocks:
        namespace = {}
        exec(compile(block, "README", "exec"), namespace)
    assert namespace["c"].pairs[0].mean_difference == pytest.approx(0.7)


def test_many_groups_page_lists_the_worst_and_best(tmp_path):
    rows = [{"file": f"g{i:04d}/a.wav", "mos": 1.0 + 4.0 * i / 499, "duration_s": 2.0} for i in range(500)]
    r = corpus_report.report(_write_csv(tmp_path / "s.csv", rows), group_by="folder")
    assert len(r.groups) == 500 and r.groups["group"].iat[0] == "g0000"
    page = corpus_report.to_html(r)
    assert "g0000" in page and "g0099" in page and "g0499" in page and "g0250" not in page
    assert "The 100 worst and 100 best of 500 groups" in page
