"""`distill-mos conformance`: this machine's scores against the original package's committed ones (issue 19, point 4)."""

import csv

import pytest
from conftest import DATA, all_sample_files

from distill_mos.cli import dispatch
from distill_mos.conformance import REFERENCE, conformance_files, read_reference


def test_the_committed_reference_is_the_original_packages_scores_of_every_bundled_clip(original_file_scores):
    reference = read_reference()
    assert sorted(reference) == [f.as_posix() for f in conformance_files()]
    assert len(reference) == len(all_sample_files())
    for file, mos in reference.items():  # the real distillmos 0.9.1, run here (conftest's original_file_scores)
        assert mos == pytest.approx(original_file_scores[str(DATA / file)], abs=1e-5), file


def test_conformance_passes_in_float32_and_prints_each_clip(capsys):
    assert dispatch(["conformance", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "float32 | torch | cpu" in out and "conforms (tolerance 0.0001)" in out
    for file in read_reference():
        assert file in out


def test_conformance_fails_past_the_tolerance(tmp_path, capsys):
    shifted = tmp_path / "reference.csv"
    rows = list(csv.DictReader(open(REFERENCE, newline="")))
    rows[-1]["mos"] = str(float(rows[-1]["mos"]) + 2e-4)  # one clip off by twice the tolerance
    with open(shifted, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "mos"])
        writer.writeheader()
        writer.writerows(rows)
    assert dispatch(["conformance", "--device", "cpu", "--reference", str(shifted)]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT conform" in out and "-2.0" in out.splitlines()[-2]  # the culprit's delta, about -2.00e-04
