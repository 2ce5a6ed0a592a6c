"""
Deployability of the Space (issue 11.5): `space/requirements.txt` agrees with `pyproject.toml` and installs CPU-only
torch wheels, `space/README.md` states the repository layout that `space/build_space.py` builds, and that folder,
alone, runs as a Space in a fresh virtual environment and answers `/predict`.

The fresh environment is offline: it is a new `python -m venv`, whose only extra import path is a folder of links to
exactly the installed distributions that `requirements.txt` (and gradio at the README's sdk_version, which Spaces
install themselves) resolve to, transitive dependencies included, and not this project's own distribution.
`pip install --no-index -r requirements.txt` must then find every requirement satisfied, and the Space must start
from its own folder, with its own copy of `distill_mos` and of the model.
"""

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import GENSPEECH, ROOT

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

CLIP = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir3" / "melp.wav"
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
START_TIMEOUT_S = 240


def load_builder():
    spec = importlib.util.spec_from_file_location("distill_mos_build_space", ROOT / "space" / "build_space.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def space_requirements() -> dict[str, Requirement]:
    return {
        canonicalize_name(r.name): r
        for r in (Requirement(line) for line in requirement_lines(ROOT / "space" / "requirements.txt") if not line.startswith("-"))
    }


def sdk_version() -> str:
    front = (ROOT / "space" / "README.md").read_text().split("---")[1]
    return re.search(r"^sdk_version:\s*(\S+)", front, re.M).group(1)


def test_requirements_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {canonicalize_name(Requirement(d).name): Requirement(d) for d in project["dependencies"]}
    extra = {canonicalize_name(Requirement(d).name): Requirement(d) for d in project["optional-dependencies"]["space"]}
    gradio = extra.pop("gradio")  # Spaces install gradio themselves, at sdk_version
    wanted.update(extra)
    got = space_requirements()
    assert sorted(got) == sorted(wanted)
    for name, requirement in wanted.items():
        assert got[name].specifier == requirement.specifier, name
        assert got[name].marker == requirement.marker and got[name].extras == requirement.extras, name
    assert gradio.specifier.contains(sdk_version())
    assert Version(sdk_version()).major == 6  # app.py uses the gradio 6 API (api_visibility)


def test_requirements_install_cpu_only_torch_and_nothing_from_git():
    lines = requirement_lines(ROOT / "space" / "requirements.txt")
    assert lines[0] == CPU_INDEX  # an index option, before the requirements it applies to
    assert not [line for line in lines if "git+" in line or "@" in line]  # the Space is self-contained


def test_space_readme_states_the_repository_layout():
    """space/README.md lists exactly what space/build_space.py deploys."""
    builder = load_builder()
    readme = (ROOT / "space" / "README.md").read_text()
    section = readme.split("## Deploying as a Space", 1)[1].split("\n## ", 1)[0]
    for name in (*builder.SPACE_FILES, *builder.SPACE_FOLDERS, *builder.ROOT_FILES, builder.LIBRARY):
        assert f"`{name}" in section, name
    assert "python space/build_space.py" in section and "--repo-type space" in section
    assert "git+" not in readme


# --- the deployed folder, in a fresh virtual environment --------------------------------------------------------------


def resolve_installed(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """The installed distributions `requirements` need, transitive dependencies included (markers evaluated)."""
    found: dict[str, metadata.Distribution] = {}
    expanded: dict[str, set[str]] = {}  # extras whose dependencies were followed, per distribution ("" = base)
    todo = list(requirements)
    while todo:
        requirement = todo.pop()  # its marker was evaluated by whoever required it
        name = canonicalize_name(requirement.name)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement} is required but not installed in the test environment")
        assert requirement.specifier.contains(dist.version, prereleases=True), (
            f"{requirement} is required, {dist.version} is installed"
        )
        extras = ({""} | set(requirement.extras)) - expanded.setdefault(name, set())
        if not extras:
            continue
        found[name] = dist
        expanded[name] |= extras
        for line in dist.requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dependency)
    return found


def link_distributions(distributions: dict[str, metadata.Distribution], folder: Path) -> None:
    """A folder of links to the top-level files and folders (packages, modules, .dist-info) of `distributions`."""
    folder.mkdir()
    for dist in distributions.values():
        site = Path(dist.locate_file(""))
        for entry in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if entry == "__pycache__" or entry.endswith(".pth") or (folder / entry).exists():
                continue
            if (site / entry).exists():
                (folder / entry).symlink_to(site / entry)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def deployed_space(tmp_path_factory):
    """The Space folder as built for deployment, and a fresh venv that satisfies its requirements.txt offline."""
    tmp = tmp_path_factory.mktemp("deploy")
    space = load_builder().build(tmp / "space")
    requirements = list(space_requirements().values()) + [Requirement(f"gradio=={sdk_version()}")]
    distributions = resolve_installed(requirements)
    assert "distill-mos-hf" not in distributions and "torch" in distributions and "gradio" in distributions
    link_distributions(distributions, tmp / "site")
    venv = tmp / "venv"
    # without pip: its bundled setuptools would shadow the resolved one; pip runs from the test's environment instead
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(site_packages, "distill_mos_test_deps.pth").write_text(str(tmp / "site") + "\n")
    unset = ("PYTHONPATH", "DISTILL_MOS_MODEL", "DISTILL_MOS_SPACE_MODEL", "DISTILL_MOS_CACHE")
    env = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("PIP_")}
    env["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    return space, python, env


def test_deployed_requirements_are_satisfied_offline(deployed_space):
    space, python, env = deployed_space
    # --isolated: no pip configuration (find-links, extra indexes) from this machine; --no-index: nothing downloaded
    run = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "--isolated", "install", "--no-index", "-r", "requirements.txt"],
        cwd=space, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for name in space_requirements():
        assert re.search(rf"Requirement already satisfied: {name}\b", run.stdout, re.I), name


def test_deployed_space_uses_its_own_library_and_model(deployed_space):
    space, python, env = deployed_space
    run = subprocess.run(
        [python, "-c", "import distill_mos, modeling_distillmos; print(distill_mos.__file__); "
         "print(modeling_distillmos.__file__); print(distill_mos.default_model_location())"],
        cwd=space, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    library, modeling, model = run.stdout.split()
    assert Path(library) == space / "distill_mos" / "__init__.py"
    assert Path(modeling) == space / "modeling_distillmos.py"
    assert Path(model) == space


def test_deployed_space_answers_predict(deployed_space, scorer):
    from gradio_client import Client, handle_file

    space, python, env = deployed_space
    port = free_port()
    log = space.parent / "space.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [python, "app.py"], cwd=space, stdout=output, stderr=subprocess.STDOUT,
            env={**env, "GRADIO_SERVER_PORT": str(port), "DISTILL_MOS_CONCURRENCY": "1"},
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, f"the Space exited ({server.returncode}):\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the Space did not start in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        result = Client(url, verbose=False, download_files=False).predict(handle_file(str(CLIP)), api_name="/predict")
        (expected,) = scorer.score_files([CLIP])
        assert result["mos"] == pytest.approx(expected.mos, abs=1e-4)
        assert result["window_scores"] == pytest.approx(expected.window_scores, abs=1e-4)
        assert (result["file"], result["error"]) == ("melp.wav", None)
        assert result["human_mos"] == pytest.approx(1.96, abs=0.005)  # the bundled example's label, from examples/
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
