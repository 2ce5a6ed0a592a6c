"""README.md is also the Hub model card and CI's script: keep it true."""

import re

import yaml
from conftest import GENSPEECH, ROOT

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
    command = 'python -m pip install -e ".[test]" && python -m pytest'
    assert command in README
    assert command in (ROOT / ".ci" / "run").read_text()


def test_quick_start_runs_on_a_local_checkout(tmp_path, monkeypatch):
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", README, re.S).group(1)
    block = block.replace('"distill-mos/distill-mos-v7"', repr(str(ROOT)))
    block = block.replace('"speech.wav"', repr(str(GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3/lpcnq.wav")))
    namespace = {}
    exec(compile(block, "README quick start", "exec"), namespace)
    assert abs(namespace["output"].mos.item() - 3.29) <= 0.005  # the original README's score for this clip
