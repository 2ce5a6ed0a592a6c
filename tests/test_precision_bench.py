"""
bench/benchmark.py's precision helpers (issue 12): the CPU report must say what torch says about the ISA and what
`dtype="auto"` picks, the deviation figures must be the plain statistics they claim to be, and the human-MOS sets must
be the bundled rated clips. No timings are asserted (speed is printed by the benchmark, never tested).
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("precision_benchmark_under_test", ROOT / "bench" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_report_matches_torch_and_resolve_dtype(bench):
    from distill_mos.scorer import resolve_dtype

    info = bench.cpu_report()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["avx512_bf16"] == bool(torch.cpu._is_avx512_bf16_supported())
    assert info["amx_tile"] == bool(torch.cpu._is_amx_tile_supported())
    assert info["native_bf16"] == (info["avx512_bf16"] or info["amx_tile"])
    expected_auto = "bfloat16" if info["native_bf16"] else "float32"
    assert info["auto_dtype"] == expected_auto == str(resolve_dtype("auto", torch.device("cpu"))).replace("torch.", "")
    assert info["cpu"] and info["threads"] == torch.get_num_threads()
    assert set(info["lscpu_flags"]) <= set(bench.ISA_FLAGS)


def test_cpu_report_printout_states_native_bf16_and_auto(bench, capsys):
    info = bench.cpu_report()
    bench.print_cpu_report(info)
    out = capsys.readouterr().out
    assert f"dtype='auto' picks {info['auto_dtype']}" in out
    assert ("native bfloat16: yes" in out) == info["native_bf16"]
    assert ("native bfloat16: NO" in out) == (not info["native_bf16"])
    # a CPU without native bfloat16 must be reported as such, whatever this machine has
    bench.print_cpu_report({**info, "avx512_bf16": False, "amx_tile": False, "native_bf16": False, "auto_dtype": "float32"})
    assert "native bfloat16: NO" in capsys.readouterr().out


def test_deviation_stats_are_mean_max_and_pearson(bench):
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    scores = np.array([1.01, 1.98, 3.05, 4.0])
    stats = bench.deviation_stats(scores, reference)
    assert stats["mean_abs"] == pytest.approx((0.01 + 0.02 + 0.05 + 0.0) / 4)
    assert stats["max_abs"] == pytest.approx(0.05)
    assert stats["pcc"] == pytest.approx(np.corrcoef(scores, reference)[0, 1])
    assert stats["n"] == 4
    assert bench.deviation_stats([3.0, 2.0], [3.5, 2.0])["pcc"] is None  # no PCC from fewer than 3 clips


def test_results_file_names_the_cpu(bench):
    path = bench.results_path({"cpu": "Intel(R) Xeon(R) Platinum 8480+"}, "cpu_precision")
    assert path.parent == ROOT / "bench" / "results"
    assert path.name == "cpu_precision_intel_r_xeon_r_platinum_8480.json"


def test_human_label_sets_are_the_bundled_rated_clips(bench):
    sets = bench._human_label_sets()
    assert {name: len(rows) for name, rows in sets.items()} == {"GenSpeech": 10, "TCD-VoIP": 6}
    for rows in sets.values():
        for path, mos in rows:
            assert path.is_file() and 1.0 <= mos <= 5.0
    assert not any(path.name == "ref.wav" for path, _ in sets["GenSpeech"])  # references are unrated


def test_precision_options_are_listed_in_help():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "benchmark.py"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for option in ("--precision", "--precision-deviation", "--precisions", "--precision-cases"):
        assert option in done.stdout


def test_readme_precision_figures_are_the_committed_results():
    """README's precision table comes from bench/results/*.json, which name the machine and its ISA."""
    import json

    text = " ".join((ROOT / "README.md").read_text().split())
    results = ROOT / "bench" / "results"
    speed = json.loads((results / "cpu_precision_amd_epyc.json").read_text())
    deviation = json.loads((results / "precision_deviation_amd_epyc.json").read_text())
    for record in (speed, deviation):  # the row says "AMD EPYC, AVX512_BF16, no AMX"
        machine = record["machine"]
        assert machine["cpu"] in text and machine["avx512_bf16"] and not machine["amx_tile"]
        assert machine["auto_dtype"] == "bfloat16"
    rows = {(row["case"], row["impl"]): row for row in speed["rows"]}
    p16, p60, p60h4 = rows[("p16", "bfloat16")], rows[("p60", "bfloat16")], rows[("p60h4", "bfloat16")]
    assert (f"{p16['x_exact_cpu']:.2f}x exact on 16 x 8 s, {p60['x_exact_cpu']:.2f}x on 60 s; "
            f"{p16['x_original_cpu']:.2f}x / {p60['x_original_cpu']:.2f}x the original; "
            f"{p60h4['x_original_cpu']:.1f}x on 60 s with `--window-hop 4`") in text
    bf16 = deviation["deviation"]["bfloat16"]["all"]
    assert f"{bf16['mean_abs']:.4f} / {bf16['max_abs']:.4f} ({bf16['n']} clips, 1-60 s)" in text
    human = deviation["human_mos"]
    assert (f"by {human['GenSpeech']['bfloat16']['pcc_change']:+.4f} (GenSpeech PCC) and "
            f"{human['TCD-VoIP']['bfloat16']['pcc_change']:+.4f} (TCD-VoIP)") in text

    gpu = json.loads((results / "gpu_h200.json").read_text())
    assert gpu["gpu"] == "NVIDIA H200" and "NVIDIA H200" in text
    rate = {(row["precision"], row["window_batch"]): row["windows_per_s"] for row in gpu["throughput"]}
    assert f"{rate[('float32', 64)]:.0f} windows/s at batch 64" in text
    assert f"{rate[('float16', 64)]:.0f} windows/s at batch 64" in text
    end_to_end = gpu["end_to_end"]
    assert (f"at {end_to_end['float32']['x_real_time']:.0f}x real time in exact float32 and "
            f"{end_to_end['float16']['x_real_time']:.0f}x in float16") in text
