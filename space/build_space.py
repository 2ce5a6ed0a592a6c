#!/usr/bin/env python
"""
Builds the Hugging Face Space repository from this checkout: exactly the files the Space is deployed with.

    python space/build_space.py out/space                  # then: hf upload <user>/<space> out/space . --repo-type space

The Space is self-contained (nothing is installed from a git URL and no model is downloaded at start-up):

    README.md  requirements.txt  packages.txt  examples/  app.py and its modules (*.py)   from space/
    LICENSE  configuration_distillmos.py  modeling_distillmos.py        from the repository root
    feature_extraction_distillmos.py  config.json  preprocessor_config.json  model.safetensors
    distill_mos/  (the library's *.py files)

`app.py` then imports `distill_mos` and the model code from the Space's root (its own folder), and
`distill_mos.default_model_location()` finds the model files there, next to `distill_mos/`.
`tests/test_space_deploy.py` builds this folder, installs `requirements.txt` into a fresh virtual environment and
calls the running Space's `/predict`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

SPACE_DIR = Path(__file__).resolve().parent
ROOT = SPACE_DIR.parent

# from space/: the Space's settings and packages, and its Python modules (app.py and what it imports; not this builder)
SPACE_MODULES = tuple(sorted(p.name for p in SPACE_DIR.glob("*.py") if p.name != Path(__file__).name))
SPACE_FILES = ("README.md", "requirements.txt", "packages.txt", *SPACE_MODULES)
SPACE_FOLDERS = ("examples",)  # from space/, whole
ROOT_FILES = (  # from the repository root: the model repository's code and files
    "LICENSE",
    "configuration_distillmos.py",
    "modeling_distillmos.py",
    "feature_extraction_distillmos.py",
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
)
LIBRARY = "distill_mos"  # the library's Python files (no caches)


def space_files(root: Path = ROOT) -> dict[str, Path]:
    """{path inside the Space repository: source file} for every file the Space is deployed with."""
    space = root / "space"
    files = {name: space / name for name in SPACE_FILES}
    for folder in SPACE_FOLDERS:
        for path in sorted((space / folder).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(space))] = path
    files.update({name: root / name for name in ROOT_FILES})
    for path in sorted((root / LIBRARY).rglob("*.py")):
        if "__pycache__" not in path.parts:
            files[str(path.relative_to(root))] = path
    missing = [str(source) for source in files.values() if not source.is_file()]
    if missing:
        raise FileNotFoundError(f"files the Space needs are missing: {', '.join(missing)}")
    weights = files["model.safetensors"]
    if weights.stat().st_size < 1_000_000:  # a git-lfs pointer, not the weights
        raise ValueError(f"{weights} is a {weights.stat().st_size}-byte git-lfs pointer: run `git lfs pull` first")
    return files


def build(target: str | Path, root: Path = ROOT) -> Path:
    """Writes the Space repository to `target` (an empty or missing folder) and returns it."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty")
    for name, source in space_files(root).items():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, help="folder to write the Space repository to (empty or missing)")
    args = parser.parse_args(argv)
    try:
        target = build(args.target)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"build_space: {error}", file=sys.stderr)
        return 2
    count = sum(1 for p in target.rglob("*") if p.is_file())
    print(f"wrote {count} files to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
