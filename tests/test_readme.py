"""README.md is also the Hub model card and CI's script: keep it true."""

import csv
import re

import numpy as np
import pytest
import soundfile
import yaml
from conftest import GENSPEECH, ROOT, require_module

README = (ROOT / "README.md").read_text()


def test_front_matter_is_a_valid_model_card():
    front = yaml.safe_load(README.split("---", 2)[1])
    assert front["license"] == "mit" and front["library_name"] == "transformers"
    results = front["model-index"][0]["results"]
    names = {r["dataset"]["name"] for r in results}
    assert {"GenSpeech", "TCD-VoIP", "Tencent"} <= names
    paper = dict(zip(*[line.split(",") for line in (GENSPEECH.parent / "reference/paper_pcc.csv").read_text().splitlines()
                       if line.startswith(("model,", "Distill-MOS v7"))]))
    genspeech = next(r for r in results if r["dataset"]["name"] == "GenSpeech")
    assert genspeech["metrics"][0]["value"] == float(paper["GenSpeech"])


def test_ci_runs_the_readme_test_command():
    """The README's two set-up commands are one pasteable line each, and .ci/run runs the test one as written."""
    import subprocess

    lines = README.splitlines()
    test_line = next(line for line in lines if line.startswith("apt-get update && apt-get install -y ffmpeg chromium"))
    assert test_line.endswith('&& python -m venv .venv && . .venv/bin/activate && python -m pip install -e ".[test]" '
                              "&& python -m pytest".replace("python -m venv", "python3 -m venv"))
    main_line = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && distill-mos -r tests/data/genspeech/audio"
    assert main_line in lines
    # .ci/run extracts exactly that line from README.md (grep -m1 on its start) and evals it
    ci = (ROOT / ".ci" / "run").read_text()
    pattern = ci.split("grep -m1 '", 1)[1].split("'", 1)[0]
    found = subprocess.run(["grep", "-m1", pattern, str(ROOT / "README.md")], capture_output=True, text=True).stdout
    assert found.rstrip("\n") == test_line
    assert 'eval "$command"' in ci


def test_quick_start_runs_on_a_local_checkout(tmp_path, monkeypatch):
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2  # the model + feature extractor, then the pipeline
    dir3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"
    namespace = {}
    for index, block in enumerate(blocks):
        block = block.replace('"distill-mos/distill-mos-v7"', repr(str(ROOT)))
        block = block.replace('"speech.wav"', repr(str(dir3 / "lpcnq.wav")))
        for name, clip in (("a.wav", "ref.wav"), ("b.flac", "opus.wav"), ("c.wav", "melp.wav")):
            block = block.replace(f'"{name}"', repr(str(dir3 / clip)))
        namespace["_results"] = []
        # keep each expression statement's value (the pipeline lines are bare calls)
        lines = [f"_results.append({line.split('#')[0].strip()})" if line.startswith("pipe(") else line
                 for line in block.splitlines()]
        exec(compile("\n".join(lines), f"README quick start block {index}", "exec"), namespace)
    assert abs(namespace["output"].mos.item() - 3.29) <= 0.005  # the original README's score for this clip
    by_path, by_array, by_dict, listed = namespace["_results"]
    for result in (by_path, by_array, by_dict):
        assert abs(result["mos"] - 3.29) <= 0.005
    # the published scores of ref, opus and melp (the original README)
    assert [round(r["mos"], 2) for r in listed] == pytest.approx([4.55, 4.05, 3.09], abs=0.0051)


# --- the Evaluation table ----------------------------------------------------------------------------------------

SETS = {"GenSpeech": GENSPEECH, "TCD-VoIP": GENSPEECH.parent / "tcdvoip"}


def _evaluation_rows() -> dict[tuple[str, str], list[str]]:
    """README's Evaluation table: {(set, estimator): cells}."""
    section = README.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in SETS:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def _figures(predictions, human) -> list[float]:
    from scipy import stats

    predictions, human = np.asarray(predictions), np.asarray(human)
    return [stats.pearsonr(predictions, human)[0], stats.spearmanr(predictions, human)[0],
            stats.kendalltau(predictions, human)[0], float(np.sqrt(np.mean((predictions - human) ** 2)))]


def _rated(folder) -> list[dict]:
    with open(folder / "labels.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["mos"].strip()]


def _paper_pcc() -> dict[str, dict[str, str]]:
    lines = (GENSPEECH.parent / "reference/paper_pcc.csv").read_text().splitlines()
    header = lines[0].split(",")
    return {line.split(",")[0]: dict(zip(header, line.split(","))) for line in lines[1:]}


def _check_row(cells, figures_per_estimator, n, paper):
    """cells: n | PCC | SRCC | KTAU | RMSE | paper PCC, each 'a / b' for two estimators, printed to 3 decimals."""
    assert cells[0] == str(n)
    for column, printed in enumerate(cells[1:5]):
        values = [float(v) for v in printed.split(" / ")]
        expected = [figures[column] for figures in figures_per_estimator]
        assert values == pytest.approx(expected, abs=5.1e-4), (column, printed, expected)
    assert cells[5].split(" (")[0] == paper


@pytest.mark.parametrize("name", list(SETS))
def test_evaluation_table_distill_mos_rows(name, original_file_scores):
    """The Distill-MOS rows are the original package's own scores against the bundled labels."""
    folder = SETS[name]
    rows = _rated(folder)
    figures = _figures([original_file_scores[str(folder / r["file"])] for r in rows], [float(r["mos"]) for r in rows])
    paper = _paper_pcc()
    cells = _evaluation_rows()[(name, "Distill-MOS")]
    _check_row(cells, [figures], len(rows), paper["Distill-MOS v7 (released)"][name])
    assert cells[5] == f"{paper['Distill-MOS v7 (released)'][name]} (n={paper['n_clips'][name]})"


@pytest.mark.parametrize("name", list(SETS))
def test_evaluation_table_dnsmos_rows(name):
    """The DNSMOS rows are speechmos's DNSMOS P.808 / P.835 (OVRL) on the first channel resampled to 16 kHz with
    torchaudio (as the original CLI and eval/benchmark.py prepare audio), against the bundled labels."""
    import torch
    import torchaudio

    require_module("librosa", "needed by speechmos (in the test extra)")
    require_module("onnxruntime", "needed by speechmos (in the test extra)")
    dnsmos = require_module("speechmos.dnsmos", "the DNSMOS peer (speechmos, in the test extra)")
    folder = SETS[name]
    rows = _rated(folder)
    p808, p835 = [], []
    for row in rows:
        waveform, rate = soundfile.read(folder / row["file"], dtype="float32", always_2d=True)
        waveform = torch.from_numpy(waveform[:, 0].copy())[None]
        if rate != 16000:
            waveform = torchaudio.transforms.Resample(rate, 16000)(waveform)
        scores = dnsmos.run(np.clip(waveform[0].numpy(), -1.0, 1.0), 16000)
        p808.append(float(scores["p808_mos"]))
        p835.append(float(scores["ovrl_mos"]))
    human = [float(r["mos"]) for r in rows]
    paper = _paper_pcc()
    cells = _evaluation_rows()[(name, "DNSMOS P.808 / P.835")]
    _check_row(cells, [_figures(p808, human), _figures(p835, human)], len(rows),
               f"{paper['DNSMOS P.808'][name]} / {paper['DNSMOS P.835'][name]}")


def test_model_lookup_order_is_documented():
    """The order `tests/test_api.py::test_model_lookup_order_is_the_documented_one` and
    `tests/test_space_app.py::test_space_model_lookup_order` check is the one README.md states."""
    text = " ".join(README.split())
    assert ("`from_pretrained()` without a location takes the model files from `$DISTILL_MOS_MODEL`, else from this "
            "checkout, else from the copy `pip install` put in `<prefix>/share/distill-mos`, else from the Hub id "
            "`distill-mos/distill-mos-v7`.") in text
    assert "it loads the model from `DISTILL_MOS_SPACE_MODEL`, else from where `from_pretrained()` looks" in text


def test_memory_figures_are_the_committed_benchmark_results():
    """README's peak-memory figures are those of bench/results/*.json, which name the machine they were measured on."""
    import json

    results = {}
    for name in ("benchmark_b_60s", "benchmark_e_1h"):
        record = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
        assert record["machine"]["cpu_model"] and record["machine"]["logical_cpus"] >= 1
        results.update(record["figures"])
    text = " ".join(README.split())
    ours, original = results["b/exact"]["peak_mb"] / 1000, results["b/original"]["peak_mb"] / 1000
    assert f"Memory: {ours:.1f} GB instead of {original:.1f} GB on a 60 s clip" in text
    assert f"peak {results['e/fast']['peak_mb'] / 1000:.1f} GB" in text


def test_performance_table_is_the_committed_benchmark_result():
    """README's padding-saving table is what bench/readme_tables.py prints from bench/results (the machine named)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "bench" / "readme_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    assert tables.padding_table() in README
