"""
Load test for the Gradio Space (not a test; a measurement). Starts `space/app.py` on 127.0.0.1 in a subprocess
(or uses --url), sends N requests to its `/predict` API from C concurrent gradio_client clients, and prints the
latency percentiles, the errors (expected 0), the answers' agreement and the server's peak memory (VmHWM).

    python bench/load_space.py                      # 50 requests, 4 clients, GenSpeech clips
    python bench/load_space.py --requests 20 --clients 2 --json out/load_space.json
    python bench/load_space.py --url http://127.0.0.1:7860/ --server-pid 1234

The server runs with the Space's defaults (queue, concurrency 2) unless DISTILL_MOS_* variables say otherwise.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = sorted((ROOT / "space" / "examples").glob("*.wav"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_kib(pid: int) -> dict:
    """Current and peak resident memory of a process and its children (Linux /proc), in KiB."""
    def read(p):
        fields = {}
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
        except OSError:
            pass
        return fields

    return read(pid)


def start_server(port: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="distill-mos-load-"))
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, str(ROOT / "space" / "app.py")], env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_up(url: str, process: subprocess.Popen | None, timeout: float = 180) -> float:
    import httpx

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer at {url} within {timeout} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--url", help="an app already running (default: start space/app.py on a free port)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's process id, for its peak memory")
    parser.add_argument("--files", nargs="*", type=Path, default=DEFAULT_CLIPS, help="clips to send, round robin")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    process, log_path = None, Path(tempfile.mkstemp(prefix="distill-mos-space-", suffix=".log")[1])
    url = args.url
    if url is None:
        url = f"http://127.0.0.1:{free_port()}/"
        process = start_server(int(url.rsplit(":", 1)[1].strip("/")), log_path)
    url = url if url.endswith("/") else url + "/"
    pid = process.pid if process else args.server_pid
    try:
        startup = wait_until_up(url, process)
        idle = memory_kib(pid) if pid else {}
        peak_rss = [idle.get("VmRSS", 0)]
        stop = threading.Event()

        def sample_memory():  # VmHWM is the kernel's own peak; sampling VmRSS is a cross-check
            while not stop.wait(0.2):
                peak_rss.append(memory_kib(pid).get("VmRSS", 0) if pid else 0)

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()

        clients = [Client(url, verbose=False, download_files=False) for _ in range(args.clients)]
        files = [str(f) for f in args.files]
        latencies, errors, scores = [], [], {}
        lock = threading.Lock()

        def one(index: int) -> None:
            client, path = clients[index % args.clients], files[index % len(files)]
            start = time.perf_counter()
            try:
                result = client.predict(handle_file(path), api_name="/predict")
                ok = isinstance(result, dict) and result.get("mos") is not None and not result.get("error")
                error = None if ok else f"unexpected answer {result!r}"
            except Exception as exc:  # noqa: BLE001 - counted and reported
                result, error = None, f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - start
            with lock:
                if error:
                    errors.append(f"request {index} ({Path(path).name}): {error}")
                else:
                    latencies.append(elapsed)
                    scores.setdefault(path, set()).add(result["mos"])

        wall_start = time.perf_counter()
        # each client sends its next request as soon as its previous answer arrives
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - wall_start
        stop.set()
        sampler.join()
        final = memory_kib(pid) if pid else {}
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    inconsistent = {Path(p).name: sorted(s) for p, s in scores.items() if len(s) > 1}
    figures = {
        "url": url,
        "requests": args.requests,
        "clients": args.clients,
        "files": [Path(f).name for f in files],
        "server_startup_s": round(startup, 2),
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 3) if wall else None,
        "latency_s": {
            "p50": round(percentile(latencies, 50), 3),
            "p90": round(percentile(latencies, 90), 3),
            "p95": round(percentile(latencies, 95), 3),
            "p99": round(percentile(latencies, 99), 3),
            "max": round(max(latencies), 3) if latencies else None,
            "mean": round(statistics.fmean(latencies), 3) if latencies else None,
        },
        "errors": len(errors),
        "error_messages": errors[:10],
        "same_file_same_score": not inconsistent,
        "server_memory_mib": {
            "idle_rss": round(idle.get("VmRSS", 0) / 1024, 1) if idle else None,
            "peak_rss_sampled": round(max(peak_rss) / 1024, 1) if pid else None,
            "peak_vmhwm": round(final.get("VmHWM", 0) / 1024, 1) if final else None,
        },
        "cpu_count": os.cpu_count(),
    }
    print(f"{args.requests} requests from {args.clients} clients to {url} in {wall:.1f} s "
          f"({figures['throughput_rps']} req/s); server started in {startup:.1f} s")
    lat = figures["latency_s"]
    print(f"latency s: p50 {lat['p50']}  p90 {lat['p90']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    print(f"errors: {len(errors)} (expected 0)")
    for message in errors[:10]:
        print("  " + message)
    if inconsistent:
        print(f"WARNING: one file got different scores: {inconsistent}")
    memory = figures["server_memory_mib"]
    print(f"server memory MiB: idle {memory['idle_rss']}, peak (VmHWM) {memory['peak_vmhwm']}, "
          f"peak sampled RSS {memory['peak_rss_sampled']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if process is not None and (errors or inconsistent):
        print(f"server log: {log_path}")
    return 1 if errors or inconsistent else 0


if __name__ == "__main__":
    sys.exit(main())
