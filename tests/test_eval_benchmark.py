"""eval/benchmark.py and eval/reproduce_genspeech.py: figures equal those computed here from the original package's
own scores; CSV, saved-dataset, audiofolder and Hub inputs; stereo, 24/48 kHz and float WAV; the DNSMOS peer."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from scipy import stats

from conftest import GENSPEECH, ROOT, TCDVOIP, original_file_score, require_module

require_module("evaluate")
datasets = require_module("datasets")

EVAL = ROOT / "eval"
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchmark = _load_module("distill_mos_eval_benchmark", EVAL / "benchmark.py")


def rated_rows(labels_csv):
    with open(labels_csv, newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["mos"].strip()]


def expected_figures(labels_csv, original_file_scores):
    """pcc/srcc/ktau/rmse and the per-condition figures, from the original package's scores and the labels."""
    rows = rated_rows(labels_csv)
    pred = np.array([original_file_scores[str(labels_csv.parent / row["file"])] for row in rows])
    human = np.array([float(row["mos"]) for row in rows])
    conditions = sorted({row["condition"] for row in rows})
    sys_pred = np.array([pred[[r["condition"] == c for r in rows]].mean() for c in conditions])
    sys_human = np.array([human[[r["condition"] == c for r in rows]].mean() for c in conditions])
    figures = {
        "n": len(rows),
        "pcc": stats.pearsonr(pred, human)[0],
        "srcc": stats.spearmanr(pred, human)[0],
        "ktau": stats.kendalltau(pred, human)[0],
        "rmse": float(np.sqrt(np.mean((pred - human) ** 2))),
        "n_systems": len(conditions),
    }
    if len(conditions) > 2:
        figures.update(
            system_pcc=stats.pearsonr(sys_pred, sys_human)[0],
            system_srcc=stats.spearmanr(sys_pred, sys_human)[0],
            system_rmse=float(np.sqrt(np.mean((sys_pred - sys_human) ** 2))),
        )
    return figures, dict(zip([row["file"] for row in rows], pred))


def assert_figures_match(results, expected):
    for key, value in expected.items():
        if key.startswith("n"):
            assert results[key] == value, key
        else:
            assert results[key] == pytest.approx(value, abs=1e-4), key


def read_predictions(path):
    with open(path, newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def run(args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=OFFLINE_ENV, capture_output=True,
                          text=True, timeout=timeout)


# --- the paper's test sets --------------------------------------------------------------------------------------


def test_reproduce_genspeech_command(tmp_path, original_file_scores):
    """The README's reproduction command: its figures and per-file scores equal the original package's."""
    out = tmp_path / "genspeech"
    proc = run([EVAL / "reproduce_genspeech.py", "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    expected, per_file = expected_figures(GENSPEECH / "labels.csv", original_file_scores)
    assert_figures_match(results, expected)
    assert results["paper"]["set"] == "GenSpeech" and results["paper"]["n"] == 160
    assert results["paper"]["pcc"]["Distill-MOS"] == pytest.approx(0.82)
    assert results["n_unrated"] == 2  # the two ref.wav are scored (the README lists one) but not in the figures

    # the printed table: n, the four figures, the paper's PCC, and the note that the paper used the full set
    table_row = next(line for line in proc.stdout.splitlines() if line.startswith("| Distill-MOS (ours)"))
    cells = [c.strip() for c in table_row.strip("|").split("|")]
    assert cells[1] == "10"
    assert float(cells[2]) == pytest.approx(expected["pcc"], abs=6e-4)
    assert float(cells[5]) == pytest.approx(expected["rmse"], abs=6e-4)
    assert cells[6] == "0.82"
    assert "full GenSpeech test set (160 clips)" in proc.stdout

    # the six mfall/dir3 files: ours = original live = the original README's published values (to 0.005)
    with open(out / "per_file_dir3.csv", newline="") as handle:
        six = list(csv.DictReader(handle))
    assert len(six) == 6
    published = {row["file"]: float(row["distillmos_expected"])
                 for row in csv.DictReader(open(GENSPEECH / "reference_model_predictions_distillmos.csv"))}
    for row in six:
        original = original_file_scores[str(GENSPEECH / row["file"])]
        assert float(row["ours"]) == pytest.approx(original, abs=1e-4)
        assert float(row["original_live"]) == pytest.approx(original, abs=1e-6)
        assert float(row["ours"]) == pytest.approx(published[row["file"]], abs=0.0051)
        assert f"| {os.path.basename(row['file'])} |" in proc.stdout
    predictions = read_predictions(out / "predictions.csv")
    for file, score in per_file.items():
        assert float(predictions[file]["Distill-MOS"]) == pytest.approx(score, abs=1e-4)
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tcdvoip_figures_equal_original(tmp_path, scorer, original_file_scores):
    labels = TCDVOIP / "labels.csv"
    paper_set = benchmark.detect_paper_set(str(labels.parent))
    assert paper_set == "TCD-VoIP"
    dataset = benchmark.load_csv(labels)
    results = benchmark.run_benchmark(dataset, tmp_path, name="TCD-VoIP", scorer=scorer, paper_set=paper_set,
                                      system_column="condition", quiet=True)
    expected, per_file = expected_figures(labels, original_file_scores)
    assert_figures_match(results, expected)
    assert results["paper"]["pcc"]["Distill-MOS"] == pytest.approx(0.84) and results["paper"]["n"] == 384

    predictions = read_predictions(tmp_path / "predictions.csv")
    assert len(predictions) == 6
    for file, score in per_file.items():
        assert float(predictions[file]["Distill-MOS"]) == pytest.approx(score, abs=1e-4)
    table = (tmp_path / "results.md").read_text()
    assert "paper PCC (TCD-VoIP, n=384)" in table and "| 0.84 |" in table
    assert "System level" in table
    png = (tmp_path / "scatter.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# --- inputs: formats and sources --------------------------------------------------------------------------------


def _resampled(path, rate):
    import torchaudio

    x, sr = torchaudio.load(str(path))
    return torchaudio.transforms.Resample(sr, rate)(x)[0].numpy()


def test_benchmark_cli_on_stereo_24k_float_and_mushra_labels(tmp_path, scorer, original_model, capsys):
    """Stereo 24 kHz float32, mono 48 kHz float64 and 24-bit 24 kHz WAVs; a missing file; an unrated row; 0..100
    labels. Each file gets the score the scorer gives the same file (and the original CLI, to 1e-4)."""
    clips = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir1"
    audio = tmp_path / "set" / "wav"
    audio.mkdir(parents=True)
    left, right = _resampled(clips / "opus.wav", 24000), _resampled(clips / "speex.wav", 24000)
    n = min(len(left), len(right))
    soundfile.write(audio / "stereo_24k_float.wav", np.stack([left[:n], right[:n]], axis=1), 24000, subtype="FLOAT")
    soundfile.write(audio / "mono_48k_double.wav", _resampled(clips / "melp.wav", 48000), 48000, subtype="DOUBLE")
    soundfile.write(audio / "mono_24k_pcm24.wav", _resampled(clips / "lpcnq.wav", 24000), 24000, subtype="PCM_24")
    assert soundfile.info(audio / "stereo_24k_float.wav").channels == 2
    labels = tmp_path / "set" / "labels.csv"
    labels.write_text(
        "file,mos,condition\n"
        "wav/stereo_24k_float.wav,81,opus\n"
        "wav/mono_48k_double.wav,35.5,melp\n"
        "wav/mono_24k_pcm24.wav,60,lpcnq\n"
        "wav/unrated.wav,,ref\n"
        "wav/missing.wav,50,gone\n"
    )
    out = tmp_path / "out"
    code = benchmark.main(["--labels", str(labels), "--out", str(out), "--device", "cpu"])
    assert code == 1  # 1: a listed file could not be scored
    assert "failed: wav/missing.wav: no such file" in capsys.readouterr().err

    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 3 and results["n_failed"] == 1 and results["failed"][0]["item"] == "wav/missing.wav"
    assert results["mos_scale"] is False and results["rmse"] is None and results["paper"] is None
    predictions = read_predictions(out / "predictions.csv")
    assert "wav/unrated.wav" not in predictions and predictions["wav/missing.wav"]["Distill-MOS"] == ""
    ours = {f: float(row["Distill-MOS"]) for f, row in predictions.items() if row["Distill-MOS"]}
    files = sorted(audio.glob("*.wav"))
    reference = {f"wav/{r.path.split('/')[-1]}": r.mos for r in scorer.score_files(files)}
    for file, score in ours.items():
        assert score == pytest.approx(reference[file], abs=1e-5), file
        # the original CLI's path on the same file: measured max |delta| 9.5e-7 (AMD EPYC); 1e-4 is the documented parity
        assert score == pytest.approx(original_file_score(original_model, tmp_path / "set" / file), abs=1e-4), file
    # stereo: the first channel is scored (as the original CLI), not the mix or the other channel
    right_only = scorer.score_array(right[:n], 24000).mos
    assert abs(ours["wav/stereo_24k_float.wav"] - right_only) > 0.5

    human = [81, 35.5, 60]
    pred = [ours["wav/stereo_24k_float.wav"], ours["wav/mono_48k_double.wav"], ours["wav/mono_24k_pcm24.wav"]]
    assert results["pcc"] == pytest.approx(stats.pearsonr(pred, human)[0], abs=1e-9)
    table = (out / "results.md").read_text()
    assert "RMSE is reported only for labels on the MOS 1..5 scale" in table
    assert "| Distill-MOS (ours) | 3 |" in table and "| n/a |" in table


def _tcdvoip_rows(count=3):
    return rated_rows(TCDVOIP / "labels.csv")[:count]


def test_saved_dataset_folder(tmp_path, original_file_scores):
    """A dataset written by save_to_disk, with its audio cast to 16 kHz: scored at the native rate, as the CLI."""
    rows = _tcdvoip_rows()
    dataset = datasets.Dataset.from_dict({
        "speech": [str(TCDVOIP / r["file"]) for r in rows],
        "MOS": [float(r["mos"]) for r in rows],
        "condition": [r["condition"] for r in rows],
    }).cast_column("speech", datasets.Audio(sampling_rate=16000))
    saved = tmp_path / "tcd-voip"
    datasets.DatasetDict({"test": dataset}).save_to_disk(str(saved))
    out = tmp_path / "out"
    assert benchmark.main(["--dataset", str(saved), "--out", str(out), "--device", "cpu"]) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 3 and results["n_systems"] == 3
    assert results["paper"]["set"] == "TCD-VoIP"  # detected from the folder name
    predictions = list(csv.DictReader(open(out / "predictions.csv")))
    for row, source in zip(predictions, rows):
        assert row["file"].endswith(os.path.basename(source["file"]))
        assert float(row["Distill-MOS"]) == pytest.approx(original_file_scores[str(TCDVOIP / source["file"])], abs=1e-4)
        assert float(row["human_mos"]) == pytest.approx(float(source["mos"]))


def test_audiofolder_with_metadata(tmp_path, original_file_scores):
    import shutil

    rows = _tcdvoip_rows(2)
    folder = tmp_path / "clips"
    folder.mkdir()
    lines = ["file_name,mos"]
    for row in rows:
        shutil.copy(TCDVOIP / row["file"], folder / os.path.basename(row["file"]))
        lines.append(f"{os.path.basename(row['file'])},{row['mos']}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert benchmark.main(["--audiofolder", str(folder), "--out", str(out), "--device", "cpu", "--paper-set", "none"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 2 and "n_systems" not in results and results["paper"] is None
    scored = {os.path.basename(r["file"]): float(r["Distill-MOS"]) for r in csv.DictReader(open(out / "predictions.csv"))}
    for row in rows:
        assert scored[os.path.basename(row["file"])] == pytest.approx(original_file_scores[str(TCDVOIP / row["file"])], abs=1e-4)


def test_hub_dataset_id(tmp_path, monkeypatch, original_file_scores):
    """A Hub id goes to datasets.load_dataset (stubbed here: tests never reach the Hub)."""
    rows = _tcdvoip_rows(2)
    hub = datasets.Dataset.from_dict({
        "audio": [str(TCDVOIP / r["file"]) for r in rows], "mos": [float(r["mos"]) for r in rows], "id": ["a", "b"],
    }).cast_column("audio", datasets.Audio())
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "out"
    assert benchmark.main(["--dataset", "someone/GenSpeech", "--split", "test", "--out", str(out), "--device", "cpu"]) == 0
    assert calls == [("someone/GenSpeech", None, "test")]
    results = json.loads((out / "results.json").read_text())
    assert results["paper"]["set"] == "GenSpeech"  # matched from the id
    scored = {r["file"]: float(r["Distill-MOS"]) for r in csv.DictReader(open(out / "predictions.csv"))}
    assert scored["a"] == pytest.approx(original_file_scores[str(TCDVOIP / rows[0]["file"])], abs=1e-4)


def test_unreachable_hub_id_is_a_clean_error(tmp_path, capsys):
    code = benchmark.main(["--dataset", "nobody/no-such-dataset-xyz", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2
    assert "cannot load dataset 'nobody/no-such-dataset-xyz'" in capsys.readouterr().err
    assert benchmark.main(["--labels", str(GENSPEECH / "labels.csv"), "--mos-column", "rating", "--out", str(tmp_path / "o")]) == 2


# --- the peer estimator -----------------------------------------------------------------------------------------


def test_dnsmos_peer_column(tmp_path, scorer):
    require_module("speechmos", "the DNSMOS peer (in the test extra)")
    require_module("librosa", "needed by speechmos (in the test extra)")
    require_module("onnxruntime", "needed by speechmos (in the test extra)")
    from speechmos import dnsmos

    # 2.3 s clips: DNSMOS tiles them to 9.2 s, one 9.01 s window each (keeps the test short)
    clips = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir3"
    lines = ["file,mos,condition"]
    for name, mos in (("speex", 1.18), ("opus", 4.31), ("melp", 1.96)):
        x, sr = soundfile.read(clips / f"{name}.wav", dtype="float32")
        soundfile.write(tmp_path / f"{name}.wav", x[: int(2.3 * sr)], sr)
        lines.append(f"{name}.wav,{mos},{name}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    dataset = benchmark.load_csv(tmp_path / "labels.csv")
    results = benchmark.run_benchmark(dataset, tmp_path / "out", name="peers", scorer=scorer, paper_set="GenSpeech",
                                      peers=["dnsmos"], quiet=True)
    assert set(results["estimators"]) == {"Distill-MOS", "DNSMOS P.808", "DNSMOS P.835"}
    predictions = read_predictions(tmp_path / "out" / "predictions.csv")
    for row in predictions.values():
        for column in ("DNSMOS P.808", "DNSMOS P.835"):
            assert 1.0 <= float(row[column]) <= 5.0
    # the peer column is speechmos's own DNSMOS on the same 16 kHz waveform
    x, sr = soundfile.read(tmp_path / "opus.wav", dtype="float32")
    reference = dnsmos.run(x, sr)
    assert float(predictions["opus.wav"]["DNSMOS P.808"]) == pytest.approx(float(reference["p808_mos"]), abs=1e-5)
    assert float(predictions["opus.wav"]["DNSMOS P.835"]) == pytest.approx(float(reference["ovrl_mos"]), abs=1e-5)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| DNSMOS P.808 | 3 |" in table and "| DNSMOS P.835 | 3 |" in table
    assert "| 0.71 |" in table and "| 0.74 |" in table  # the paper's DNSMOS figures on GenSpeech
    p808 = [float(predictions[f"{n}.wav"]["DNSMOS P.808"]) for n in ("speex", "opus", "melp")]
    assert results["estimators"]["DNSMOS P.808"]["pcc"] == pytest.approx(stats.pearsonr(p808, [1.18, 4.31, 1.96])[0], abs=1e-9)
