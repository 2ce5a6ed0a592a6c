"""The Space's API through gradio_client, against the app served on 127.0.0.1."""

import os
import socket

import pytest

from conftest import GENSPEECH, require_module
from test_space_app import load_space_app

gradio_client = require_module("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

load_space_app()  # puts space/ on sys.path: the Space's modules below
import formatting  # noqa: E402
import page  # noqa: E402
import settings  # noqa: E402

CLIP = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir3" / "melp.wav"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(scorer, tmp_path_factory):
    """The app on 127.0.0.1 (a thread of this process), its uploads in a temporary folder."""
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    demo = page.build_demo(scorer, settings.Limits())
    _, url, _ = demo.launch(**page.launch_kwargs(server_port=free_port(), prevent_thread_lock=True, quiet=True))
    assert url.startswith("http://127.0.0.1:")
    yield url
    demo.close()
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old


@pytest.fixture(scope="module")
def client(served):
    return Client(served, verbose=False, download_files=False)


def test_predict_returns_the_library_score(scorer, client):
    (expected,) = scorer.score_files([CLIP])
    result = client.predict(handle_file(str(CLIP)), api_name="/predict")
    assert result["mos"] == pytest.approx(expected.mos, abs=1e-4)
    assert result["window_scores"] == pytest.approx(expected.window_scores, abs=1e-4)
    assert result["duration_s"] == pytest.approx(expected.duration)
    assert (result["sampling_rate"], result["channels"], result["error"]) == (16000, 1, None)
    assert result["quality"] == formatting.acr_label(expected.mos)


def test_predict_on_a_bad_file_raises_the_reason_and_the_app_keeps_serving(scorer, client, tmp_path):
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3 this is not audio" * 50)
    with pytest.raises(AppError, match="Not a readable audio file") as error:
        client.predict(handle_file(str(corrupt)), api_name="/predict")
    assert "Traceback" not in str(error.value) and str(tmp_path) not in str(error.value)
    (expected,) = scorer.score_files([CLIP])
    assert client.predict(handle_file(str(CLIP)), api_name="/predict")["mos"] == pytest.approx(expected.mos, abs=1e-4)


def test_score_many_endpoint_returns_table_and_csv(scorer, client, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    status, table, csv_file = client.predict([handle_file(str(CLIP)), handle_file(str(empty))], api_name="/score_many")
    (expected,) = scorer.score_files([CLIP])
    assert status.startswith("Scored 1 of 2")
    assert table["headers"] == formatting.TABLE_COLUMNS
    assert table["data"][0][:2] == ["melp.wav", round(expected.mos, 2)]
    assert table["data"][1][0] == "empty.wav" and "empty (0 bytes)" in table["data"][1][4]
    assert csv_file["orig_name"] == "distill-mos-scores.csv"
