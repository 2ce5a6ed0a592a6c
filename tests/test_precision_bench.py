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
