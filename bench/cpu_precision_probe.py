"""
CPU precision probe: exact float32 vs bfloat16 (and window hop 4 s) against the original on 16 x 8 s clips and a 60 s
clip, on THREADS threads (default 2, like this project's machines). Prints figures, writes $OUT/cpu_probe.json.
Run from the repository root: `THREADS=2 python bench/cpu_precision_probe.py`. Results from an Intel Xeon with AMX:
bench/results/cpu_precision_xeon_amx.json.
"""
import json, os, subprocess, sys, time
from pathlib import Path
import numpy as np, torch
ROOT = Path.cwd()
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model_name = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_vnni") if f" {f}" in lscpu]
info = {"cpu": model_name, "flags": flags, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx": torch.cpu._is_amx_tile_supported(),
        "mkldnn_bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported()}
print(json.dumps(info))
from benchmark import speech_source
from distill_mos import DistillMOSScorer
import distillmos
src = speech_source()
clips16 = [np.resize(np.roll(src, -i * 37337), 8 * 16000).astype(np.float32) for i in range(16)]
clip60 = np.resize(np.roll(src, -12345), 60 * 16000).astype(np.float32)
orig = distillmos.ConvTransformerSQAModel().eval()
def best(f, reps=2):
    out, t = None, []
    for _ in range(reps):
        s = time.perf_counter(); out = f(); t.append(time.perf_counter() - s)
    return min(t), out
res = {"info": info}
with torch.no_grad():
    res["original"] = {"16x8s": best(lambda: [orig(torch.from_numpy(c)[None]).item() for c in clips16]),
                       "60s": best(lambda: [orig(torch.from_numpy(clip60)[None]).item()])}
for dt, hop in (("float32", None), ("bfloat16", None), ("bfloat16", 4.0), ("float32", 4.0)):
    sc = DistillMOSScorer.from_pretrained(str(ROOT), device="cpu", dtype=dt, window_hop=hop)
    name = dt + ("" if hop is None else f"-hop{hop:g}")
    res[name] = {"16x8s": best(lambda: [s.mos for s in sc.score_arrays(clips16, 16000)]),
                 "60s": best(lambda: [sc.score_array(clip60, 16000).mos])}
for name in [k for k in res if k not in ("info",)]:
    for case in ("16x8s", "60s"):
        t, scores = res[name][case]
        ref_t, ref = res["original"][case]
        ex_t, ex = res["float32"][case]
        d = np.abs(np.array(scores) - np.array(ex))
        print(f"{name:>14} {case:>6}: {t:7.2f} s  x{ref_t / t:5.2f} original  x{ex_t / t:5.2f} exact  "
              f"max|d| vs exact {d.max():.4f}  vs original {np.abs(np.array(scores) - np.array(ref)).max():.2e}")
out = Path(os.environ.get("OUT", "/tmp")) / "cpu_probe.json"
out.write_text(json.dumps({k: v if k == "info" else {c: {"seconds": v[c][0], "scores": v[c][1]} for c in v} for k, v in res.items()}, indent=1))
