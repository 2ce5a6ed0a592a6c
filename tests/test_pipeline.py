"""`pipeline("speech-quality-assessment", model=..., trust_remote_code=True)`, offline from a local folder."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import GENSPEECH, ROOT, TCDVOIP, original_file_score

# What a Hub repository holds: what `pipeline(..., model="<hub id>")` downloads.
REPOSITORY_FILES = (
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "configuration_distillmos.py",
    "modeling_distillmos.py",
    "feature_extraction_distillmos.py",
    "pipeline_distillmos.py",
)


@pytest.fixture(scope="module")
def pipe():
    from transformers import pipeline

    return pipeline("speech-quality-assessment", model=str(ROOT), trust_remote_code=True)


@pytest.fixture(scope="module")
def files():
    # a 16 kHz GenSpeech file, a longer one, and a 48 kHz TCD-VoIP file (resampled as the original CLI does)
    genspeech = sorted(GENSPEECH.glob("audio/**/*.wav"))
    tcdvoip = sorted(TCDVOIP.glob("audio/**/*.wav"))
    return [genspeech[0], genspeech[-1], tcdvoip[0]]


def test_config_registers_the_task():
    config = json.loads((ROOT / "config.json").read_text())
    assert config["custom_pipelines"]["speech-quality-assessment"]["impl"] == "pipeline_distillmos.DistillMOSPipeline"


def test_file_paths_score_as_the_original(pipe, files, original_model):
    assert type(pipe).__name__ == "DistillMOSPipeline"
    for path in files:
        result = pipe(str(path))
        assert set(result) == {"mos", "window_scores", "window_start_times", "warning", "error"}
        assert abs(result["mos"] - original_file_score(original_model, path)) <= 1e-4, path
        assert len(result["window_scores"]) == len(result["window_start_times"]) >= 1
        assert result["window_start_times"][0] == 0.0
        # the clip's score is the mean of its windows' scores
        assert abs(np.mean(result["window_scores"]) - result["mos"]) < 1e-5


def test_array_dict_and_tensor_inputs_agree_with_paths(pipe, files):
    audio, rate = sf.read(files[2], dtype="float32")  # 48 kHz mono
    by_path = pipe(str(files[2]))["mos"]
    assert pipe(audio, sampling_rate=rate)["mos"] == pytest.approx(by_path, abs=1e-6)
    assert pipe({"array": audio, "sampling_rate": rate})["mos"] == pytest.approx(by_path, abs=1e-6)
    assert pipe({"raw": audio, "sampling_rate": rate})["mos"] == pytest.approx(by_path, abs=1e-6)
    assert pipe(torch.from_numpy(audio), sampling_rate=rate)["mos"] == pytest.approx(by_path, abs=1e-6)


def test_lists_and_batch_size(pipe, files):
    alone = [pipe(str(path)) for path in files]
    for batch_size in (1, 2, 3):
        batched = pipe([str(path) for path in files], batch_size=batch_size)
        assert len(batched) == len(files)
        for one, other in zip(alone, batched):
            # padded batches give each clip its own score (the attention mask), windows included
            assert other["mos"] == pytest.approx(one["mos"], abs=1e-5)
            assert other["window_scores"] == pytest.approx(one["window_scores"], abs=1e-5)
            assert other["window_start_times"] == one["window_start_times"]


def test_bad_inputs_say_what_is_wrong(pipe):
    with pytest.raises(ValueError, match="needs its sampling rate: call the pipeline with sampling_rate="):
        pipe(np.zeros(16000, dtype=np.float32))
    with pytest.raises(ValueError, match="'array' \\(or 'raw'\\) and 'sampling_rate' keys"):
        pipe({"array": np.zeros(16000, dtype=np.float32)})
    with pytest.raises(ValueError, match="takes a file path, a numpy array"):
        pipe(12345)


def test_a_hub_style_copy_without_the_package_or_torchaudio(tmp_path, files):
    """
    What a Hub user has: the repository files, transformers, torch, soundfile, and neither this package nor torchaudio.
    16 kHz audio scores; audio at another rate says that resampling needs torchaudio.
    """
    for name in REPOSITORY_FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path = [p for p in sys.path if p not in ("", {str(ROOT)!r})]
        sys.modules["distill_mos"] = None  # not installed
        sys.modules["torchaudio"] = None   # not installed
        import numpy as np, soundfile as sf
        from transformers import pipeline
        pipe = pipeline("speech-quality-assessment", model={str(tmp_path)!r}, trust_remote_code=True)
        print(pipe({str(files[0])!r})["mos"])
        audio, rate = sf.read({str(files[2])!r}, dtype="float32")
        try:
            pipe(audio, sampling_rate=rate)
        except ImportError as error:
            print("ImportError:", error)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    score = float(lines[0])
    assert 1.0 <= score <= 5.0
    assert lines[1] == (
        "ImportError: resampling 48000 Hz audio to 16000 Hz needs torchaudio (`pip install torchaudio`), or pass "
        "audio at 16000 Hz."
    )
