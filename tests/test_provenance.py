"""Every output names what produced it; --resume refuses to mix settings (issue 19, point 1)."""

import csv
import hashlib
import json
import os
import subprocess
import sys

import pytest
from conftest import GENSPEECH, ROOT

from distill_mos.cli import main
from distill_mos.provenance import (
    Provenance,
    check_model_location,
    describe,
    parquet_metadata,
    read_sidecar,
    sidecar_path,
)

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
WEIGHTS_SHA256 = hashlib.sha256((ROOT / "model.safetensors").read_bytes()).hexdigest()


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_sidecar_names_model_weights_precision_backend_and_hop(tmp_path):
    out = tmp_path / "scores.csv"
    assert main([str(DIR3 / "ref.wav"), "-o", str(out), "-q", "--model", str(ROOT)]) == 0
    record = json.loads(sidecar_path(out).read_text())
    assert record["weights_sha256"] == {"model.safetensors": WEIGHTS_SHA256}
    assert record["model"] == str(ROOT)
    assert (record["precision"], record["backend"], record["device"]) == ("float32", "torch", "cpu")
    assert (record["window_hop"], record["window_hop_s"]) == ("exact", 1.0)
    assert record["calibration"] is None
    assert not sidecar_path(out.with_name("scores.csv.partial")).exists()  # renamed with the output
    assert list(rows(out)[0]) == ["file", "mos", "duration_s", "sampling_rate", "channels", "error", "warning"]


def test_resume_refuses_bfloat16_rows_after_float32_ones_in_one_line(tmp_path, capsys):
    """The issue's case: interrupted in float32, resumed with --dtype bfloat16, which used to finish silently."""
    out = tmp_path / "s.csv"
    files = [str(DIR3 / name) for name in ("ref.wav", "opus.wav", "melp.wav")]
    assert main([files[0], "-o", str(out), "-q"]) == 0
    partial = out.with_name("s.csv.partial")  # what an interrupted run leaves: the rows so far and their record
    os.replace(out, partial)
    os.replace(sidecar_path(out), sidecar_path(partial))
    before = partial.read_text()
    capsys.readouterr()

    assert main([*files, "-o", str(out), "--resume", "--dtype", "bfloat16", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert "cannot resume" in error and "precision: float32 vs bfloat16" in error, error
    assert partial.read_text() == before and not out.exists()  # nothing appended, nothing renamed

    assert main([*files, "-o", str(out), "--resume", "--window-hop", "4", "-q"]) == 2
    assert "window_hop: 1.0 vs 4.0" in capsys.readouterr().err

    assert main([*files, "-o", str(out), "--resume", "-q"]) == 0  # the same settings continue
    assert [r["file"] for r in rows(out)] == files
    assert read_sidecar(out).precision == "float32"


def test_resume_refuses_another_model(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    assert main([str(DIR3 / "ref.wav"), "-o", str(out), "-q"]) == 0
    record = json.loads(sidecar_path(out).read_text())
    record["weights_sha256"] = {"model.safetensors": "0" * 64}
    sidecar_path(out).write_text(json.dumps(record))
    capsys.readouterr()
    assert main([str(DIR3 / "ref.wav"), str(DIR3 / "opus.wav"), "-o", str(out), "--resume", "-q"]) == 2
    assert "model:" in capsys.readouterr().err


def test_a_missing_model_folder_is_reported_as_such(capsys):
    assert main([str(DIR3 / "ref.wav"), "--model", "/nonexistent", "-q"]) == 2
    error = capsys.readouterr().err
    assert "/nonexistent: no such folder" in error and "Repo id" not in error
    with pytest.raises(ValueError, match="no such folder"):
        check_model_location("./models/mine")
    assert check_model_location("owner/name") == "owner/name"  # a Hub id is left to the Hub


def test_version_prints_the_weights_hash_without_importing_torch():
    code = ("import sys; from distill_mos.cli import main; main(['--version'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISTILL_MOS_MODEL": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("distill-mos ")
    assert f"sha256:{WEIGHTS_SHA256}" in done.stdout


def test_scorer_records_what_it_runs_with():
    from distill_mos.scorer import DistillMOSScorer

    record = DistillMOSScorer.from_pretrained(str(ROOT), device="cpu", dtype="bfloat16", window_hop=4).provenance
    assert (record.precision, record.window_hop, record.window_hop_s) == ("bfloat16", "fast", 4.0)
    assert record.weights_sha256 == {"model.safetensors": WEIGHTS_SHA256}
    exact = describe(str(ROOT))
    assert record.differences(exact) == ["precision: bfloat16 vs float32", "window_hop: 4.0 vs 1.0"]
    assert Provenance.from_dict(json.loads(record.to_json())) == record
    metadata = parquet_metadata(record)
    assert json.loads(metadata[b"distill_mos.provenance"])["precision"] == "bfloat16"


def test_datasets_column_and_ray_tables_name_what_scored_them():
    import datasets
    import pyarrow as pa

    from distill_mos import add_mos_column
    from distill_mos.ray import DistillMOSPredictor

    files = [str(DIR3 / "ref.wav")]
    dataset = datasets.Dataset.from_dict({"audio": files}).cast_column("audio", datasets.Audio())
    scored = add_mos_column(dataset, device="cpu", dtype="bfloat16", model=str(ROOT))
    assert scored["mos_provenance"][0] == describe(str(ROOT), precision="bfloat16").summary()
    assert WEIGHTS_SHA256[:16] in scored["mos_provenance"][0] and "bfloat16" in scored["mos_provenance"][0]
    table = DistillMOSPredictor(model=str(ROOT), device="cpu", num_threads=1, window_hop=4)(pa.table({"file": files}))
    record = Provenance.from_dict(json.loads(table.schema.metadata[b"distill_mos.provenance"]))
    assert (record.window_hop_s, record.weights_sha256["model.safetensors"]) == (4.0, WEIGHTS_SHA256)
