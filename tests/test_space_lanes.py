"""
The Space's two lanes (issue 23 §7): two long clips held both scoring slots, so a 1 s request waited ~214 s. Short
requests (by their headers' durations) now have slots of their own; more waiting requests than the queue allows are
refused with a message. Also: `python space/app.py` without gradio says how to install it, in one line.
"""

import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from conftest import GENSPEECH, ROOT
from test_space_app import load_space_app

load_space_app()  # puts space/ on sys.path: the Space's modules below
import page  # noqa: E402
import scoring  # noqa: E402
import settings  # noqa: E402

LONG = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir3" / "opus.wav"  # 7.8 s


@pytest.fixture()
def short_clip(tmp_path):
    path = tmp_path / "one_second.wav"
    soundfile.write(path, 0.1 * np.sin(np.arange(16000) / 7).astype(np.float32), 16000)
    return path


def test_short_request_is_scored_while_long_ones_hold_every_long_slot(scorer, short_clip, monkeypatch):
    space = scoring.SpaceScorer(scorer, settings.Limits(concurrency=2, short_seconds=5, queue_size=1), [])
    release = threading.Event()
    real = scorer.score_clips

    def slow_for_long_clips(waveforms):  # a long clip's scoring takes until the test releases it
        if max(len(w) for w in waveforms) > 5 * 16000:
            assert release.wait(60)
        return real(waveforms)

    monkeypatch.setattr(scorer, "score_clips", slow_for_long_clips)
    results = {}

    def request(name, path):
        results[name] = space.score_path(str(path))

    threads = [threading.Thread(target=request, args=(f"long{i}", LONG)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(600):  # the two long slots taken, the third long request waiting for one
            if space.lanes.running["long"] == 2 and space.lanes.waiting == 1:
                break
            threading.Event().wait(0.05)
        assert (space.lanes.running["long"], space.lanes.waiting) == (2, 1)
        # the queue (1 waiting) is full: one more long request is refused at once, with a message
        refused = space.score_path(str(LONG))
        assert refused.mos is None and "the Space is busy" in refused.error
        # a short request does not wait: it is scored now, while the long ones are still held
        short = space.score_path(str(short_clip))
        assert short.ok and short.mos is not None and not release.is_set()
        assert all(thread.is_alive() for thread in threads)
    finally:
        release.set()
        for thread in threads:
            thread.join(120)
    assert all(results[f"long{i}"].ok for i in range(3))
    assert (space.lanes.running, space.lanes.waiting) == ({"long": 0, "short": 0}, 0)


def test_lane_is_chosen_by_the_headers_durations(scorer, short_clip, tmp_path):
    lanes = scoring.SpaceScorer(scorer, settings.Limits(short_seconds=10), []).lanes
    assert lanes.lane([1.0, 8.0]) == "short"
    assert lanes.lane([1.0, 9.5]) == "long"  # 10.5 s in all
    assert lanes.lane([1.0, None]) == "long"  # a header that does not say (a piped FLAC) may hide hours


def test_scoring_events_leave_the_limit_to_the_lanes(scorer):
    demo = page.build_demo(scorer, settings.Limits(concurrency=3, queue_size=5), examples=[])
    limits = {fn.api_name: fn.concurrency_limit for fn in demo.fns.values() if fn.api_name}
    for name in ("predict", "compare", "score_many", "score_ui", "compare_ui"):
        assert limits[name] is None, name
    # every request that may run or wait holds a Gradio worker thread
    assert page.launch_kwargs(settings.Limits(queue_size=5))["max_threads"] >= 5 + 3


def test_app_without_gradio_says_how_to_install_it_in_one_line():
    hide_gradio = (
        "import runpy, sys; sys.modules['gradio'] = None; "  # `import gradio` now fails as if it were not installed
        f"runpy.run_path({str(ROOT / 'space' / 'app.py')!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", hide_gradio], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        'The Space needs gradio: pip install -e ".[space]" (from the repository checkout), then python space/app.py'
    ]
