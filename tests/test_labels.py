"""
distill_mos.labels: the label sources read by eval/benchmark.py and distill_mos.finetune (one copy, in the library),
column guessing, per-row reading with line numbers, clear errors for a bad source; importable without torch, and
fine-tuning reads labels without loading any script of eval/.
"""

import csv
import subprocess
import sys

import pytest

from conftest import GENSPEECH, ROOT, require_module

from distill_mos import labels


def write(path, header, rows, delimiter=","):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_label_values():
    assert labels.parse_label(" 3.5 ") == (3.5, None)
    assert labels.parse_label("") == (None, None) and labels.parse_label(None) == (None, None)
    assert labels.parse_label("good")[1] == "label 'good' is not a number"
    assert "not a finite number" in labels.parse_label("nan")[1]
    assert labels.float_or_none("nan") is None and labels.float_or_none(" ") is None
    assert labels.float_or_none("4") == 4.0
    with pytest.raises(labels.LabelSourceError, match="not a number in the MOS column: 'good'"):
        labels.float_or_none("good")


def test_csv_rows_keep_every_row_with_its_line_and_resolve_paths(tmp_path):
    source = write(tmp_path / "ratings.tsv", ["file", "score", "stimulus"],
                   [["a.wav", "3", "s1"], ["", "2", "s1"], ["/abs/b.wav", "", "s2"]], delimiter="\t")
    rows, name = labels.read_label_rows(source, mos_column="score", group_column="stimulus")
    assert name == str(source)
    assert [(r.item, r.label, r.group) for r in rows] == [("a.wav", "3", "s1"), ("ratings.tsv line 3", "2", "s1"),
                                                           ("/abs/b.wav", "", "s2")]
    assert rows[0].audio == str(tmp_path / "a.wav") and rows[1].audio is None and rows[2].audio == "/abs/b.wav"


def test_a_bad_source_is_a_clear_error_naming_it(tmp_path):
    with pytest.raises(labels.LabelSourceError, match="no such labels file"):
        labels.read_label_rows(tmp_path / "missing.csv")
    source = write(tmp_path / "l.csv", ["file", "mos"], [["a.wav", "3"]])
    with pytest.raises(labels.LabelSourceError, match=r"no column 'talker'; its columns are \['file', 'mos'\]"):
        labels.read_label_rows(source, group_column="talker")
    with pytest.raises(labels.LabelSourceError, match="no system column 'sys'"):
        labels.pick_system_column("sys", ["file", "mos"], source)
    require_module("datasets")
    with pytest.raises(labels.LabelSourceError, match="no such folder"):
        labels.load_any_dataset(str(tmp_path / "nowhere"), audiofolder=True)


def test_column_guessing():
    assert labels.guess_mos_column(["file", "rating", "MOS"]) == "MOS"  # MOS_COLUMNS order
    assert labels.guess_mos_column(["file"]) is None
    assert labels.guess_id_column(["path", "audio", "id"], "audio") == "path"
    assert labels.guess_id_column(["file"], "file") is None  # the audio column itself is not an id
    assert labels.pick_system_column("auto", ["file", "condition"], "x") == "condition"
    assert labels.pick_system_column("none", ["condition"], "x") is None


def test_the_benchmark_uses_the_librarys_loaders():
    """eval/benchmark.py re-exports the library's functions: one copy of each loader."""
    require_module("evaluate")
    require_module("datasets")
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_for_test_labels", ROOT / "eval" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    for name in ("load_csv", "load_any_dataset", "normalise_dataset", "MOS_COLUMNS", "ID_COLUMNS", "SYSTEM_COLUMNS"):
        assert getattr(benchmark, name) is getattr(labels, name), name
    dataset = benchmark.load_csv(GENSPEECH / "labels.csv")
    assert len(dataset) == 10 and set(dataset.column_names) == {"audio", "human_mos", "item", "system"}


def test_labels_import_without_torch_and_finetune_loads_no_eval_script(tmp_path):
    probe = (
        "import sys\n"
        "import distill_mos.labels\n"
        "assert 'torch' not in sys.modules, 'distill_mos.labels imported torch'\n"
        "from distill_mos.finetune.data import load_labels\n"
        f"loaded = load_labels({str(GENSPEECH / 'labels.csv')!r}, group_column='item')\n"
        "assert len(loaded.clips) == 10\n"
        f"eval_dir = {str(ROOT / 'eval')!r}\n"
        "scripts = [m for m in list(sys.modules.values()) if (getattr(m, '__file__', None) or '').startswith(eval_dir)]\n"
        "assert not scripts, scripts\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
