"""Saving a fine-tuned model as a complete model repository: weights, configs, remote code and a model card."""

import json
import shutil
import tempfile
from pathlib import Path

from modeling_distillmos import DistillMOSModel

from .data import ROOT

# Remote-code files the repository root ships; copied when present (pipeline_distillmos.py is optional).
CODE_FILES = ("configuration_distillmos.py", "modeling_distillmos.py", "feature_extraction_distillmos.py",
              "pipeline_distillmos.py")
REQUIRED_CODE = CODE_FILES[:3]
# Keys of the root's config.json that make the folder load with AutoModel / pipeline(trust_remote_code=True).
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")


def code_folder() -> Path:
    """Where the remote-code files are: the checkout's root, else wherever the installed top-level modules live."""
    if all((ROOT / name).is_file() for name in REQUIRED_CODE):
        return ROOT
    import modeling_distillmos

    return Path(modeling_distillmos.__file__).resolve().parent


def save_model_repository(
    model: DistillMOSModel, feature_extractor, folder: str | Path, card: str, code_from: str | Path | None = None
) -> Path:
    """
    Writes `folder` as a model repository that loads with `AutoModel` / `pipeline` (`trust_remote_code=True`),
    `DistillMOSScorer.from_pretrained`, the `distill-mos --model` command and the Space: `config.json` (with the
    root config's `auto_map` and `custom_pipelines`), `model.safetensors`, `preprocessor_config.json`, the
    remote-code .py files and `README.md` (the model card `card`).
    """
    folder = Path(folder)
    source = Path(code_from) if code_from else code_folder()
    missing = [name for name in REQUIRED_CODE if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"cannot find the remote-code files {missing} in {source}.")
    folder.mkdir(parents=True, exist_ok=True)
    # save_pretrained into a folder holding the .py files it would copy raises SameFileError: go through a temp dir.
    with tempfile.TemporaryDirectory(prefix="distill-mos-save-") as temporary:
        model.save_pretrained(temporary)
        feature_extractor.save_pretrained(temporary)
        for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
            shutil.copyfile(Path(temporary) / name, folder / name)
    for name in CODE_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
        elif (folder / name).exists():
            (folder / name).unlink()  # a stale copy from an earlier save would not match the config
    _copy_remote_code_keys(source / "config.json", folder / "config.json")
    _copy_remote_code_keys(source / "preprocessor_config.json", folder / "preprocessor_config.json")
    (folder / "README.md").write_text(card)
    return folder


def _copy_remote_code_keys(source_config: Path, target_config: Path) -> None:
    """Sets the target's `auto_map` / `custom_pipelines` to exactly the source's (dropping what the source lacks)."""
    target = json.loads(target_config.read_text())
    reference = json.loads(source_config.read_text()) if source_config.is_file() else {}
    for key in REMOTE_CODE_KEYS:
        if key in reference:
            target[key] = reference[key]
        else:
            target.pop(key, None)
    target_config.write_text(json.dumps(target, indent=2, sort_keys=True) + "\n")


def interval_section(interval, cv_results: dict | None) -> list[str]:
    """The card's "Score interval" lines: what the carried interval (a `MOSInterval` or None) means and what not."""
    lines = ["## Score interval", ""]
    if interval is None:
        return lines + ["None: scores come without `mos_low` / `mos_high`. A `--cv` run into the same folder, with "
                        "the same options and enough clips, gives the model trained after it an interval.", ""]
    measured = "n/a" if interval.empirical_coverage is None else f"{interval.empirical_coverage:.1%}"
    k = cv_results["k"] if cv_results else interval.folds
    return lines + [
        f"Every score of this model comes with `mos_low` and `mos_high`: score ± {interval.half_width:.3f} MOS "
        f"(clipped to 1..5), meant to hold the listeners' MOS of {interval.coverage:.0%} of clips. The half-width is "
        f"the ceil((n + 1) x {interval.coverage:g})-th smallest absolute residual of the {interval.size} "
        f"out-of-fold scores above ({interval.groups} groups), each from a model trained on about {k - 1}/{k} of "
        f"the clips, without that clip's group; coverage measured on held-out groups ({interval.folds} grouped folds): "
        f"{measured}.",
        "",
        "- It holds for audio like these clips, rated the same way, on average over clips; not for each clip, and "
        "not for other languages, codecs, recording conditions or test designs.",
        "- This model was trained on all clips, the residuals come from the fold models: the K-fold \"CV\" interval "
        "of Barber et al., \"Predictive inference with the jackknife+\" (Annals of Statistics, 2021). It has no "
        "distribution-free guarantee (their CV+, at least 1 - 2 x (1 - coverage), would need the fold models at "
        "scoring time); it is close to nominal when training is stable, i.e. when the fold models score new clips "
        "as this one does.",
        "",
    ]


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def model_card(
    *,
    base_model: str,
    data_name: str,
    n_clips: int,
    n_train: int,
    n_validation: int,
    label_range: tuple[float, float] | None,
    settings: dict,
    cv_results: dict | None,
    pipeline_task: str | None = None,
    interval=None,
) -> str:
    """
    The fine-tuned model's README.md: base model, data (name, size), cross-validated figures (`cv_results`, the
    content of a `--cv` run's results.json), the score interval the model carries (`interval`, a
    `calibration.MOSInterval`, or None), how to use it (with `pipeline_task` when the repository has a pipeline).
    """
    scale = "MOS 1..5" if label_range is None else f"{label_range[0]:g}..{label_range[1]:g}, mapped linearly onto 1..5"
    local = Path(base_model).exists()
    released = local and Path(base_model).resolve() == code_folder().resolve()  # this checkout: the released model
    hub_base = "distill-mos/distill-mos-v7" if local else base_model
    if not local:
        origin = f"`{base_model}`"
    elif released:
        origin = f"`{hub_base}` (the released weights, from a local copy)"
    else:
        origin = f"the local model folder `{Path(base_model).name}`"
    lines = [
        "---",
        "license: mit",
        "library_name: transformers",
        f"base_model: {hub_base}",
        "tags:",
        "- audio",
        "- speech-quality-assessment",
        "- mos-prediction",
        "- distill-mos",
        "- custom_code",
        "---",
        "",
        "# Distill-MOS, fine-tuned",
        "",
        f"Distill-MOS fine-tuned with `python -m distill_mos.finetune`, starting from {origin}.",
        "",
        "## Data",
        "",
        f"- Labels: `{data_name}`",
        f"- {n_clips} rated clips: {n_train} trained on, {n_validation} held out for early stopping",
        f"- Label scale: {scale}",
        "",
        "## Training",
        "",
        ("Only the transformer encoder and pooling were trained (the convolutional feature encoder frozen, its "
         "features computed once)" if not settings.get("train_all") else "Every parameter was trained (`--train-all`)")
        + "; batch norms kept at their running statistics. Settings: "
        + ", ".join(f"{key} {value}" for key, value in settings.items()) + ".",
        "",
        "## Cross-validated agreement with the listeners",
        "",
    ]
    if cv_results:
        lines += [
            f"Out-of-fold figures of {cv_results['k']}-fold cross-validation on the same {cv_results['n']} clips"
            + (f", grouped by `{cv_results['group_column']}` (no group in both the training and the test part)"
               if cv_results.get("group_column") else "")
            + ", beside the released model on the same clips:",
            "",
            "| model | n | PCC | SRCC | KTAU | RMSE |",
            "|---|---|---|---|---|---|",
        ]
        for name, key in (("released Distill-MOS v7", "baseline"), ("fine-tuned (out of fold)", "cv")):
            figures = cv_results[key]
            lines.append(f"| {name} | {cv_results['n']} | {_figure(figures['pcc'])} | {_figure(figures['srcc'])} | "
                         f"{_figure(figures['ktau'])} | {_figure(figures['rmse'])} |")
        lines += ["", "RMSE is given only for labels on the MOS 1..5 scale."]
    else:
        lines += ["Not cross-validated: run `python -m distill_mos.finetune ... --cv 5 --group-column COLUMN` into the "
                  "same output folder first; the model card then shows the out-of-fold figures."]
    lines += [
        "",
        "These figures hold for audio like the training data. A model tuned on one domain can score other kinds of "
        "audio worse than the released model: keep using the released model outside that domain.",
        "",
        *interval_section(interval, cv_results),
        "## Use",
        "",
        "```python",
        "from transformers import AutoFeatureExtractor, AutoModel",
        "model = AutoModel.from_pretrained(\"path/to/this/folder\", trust_remote_code=True).eval()",
        "feature_extractor = AutoFeatureExtractor.from_pretrained(\"path/to/this/folder\", trust_remote_code=True)",
        "```",
        "",
        *([f"or `pipeline(\"{pipeline_task}\", model=\"path/to/this/folder\", trust_remote_code=True)`,"]
          if pipeline_task else []),
        "or `distill-mos --model path/to/this/folder clips/`,",
        "`DistillMOSScorer.from_pretrained(\"path/to/this/folder\")`,",
        "or the Space with `DISTILL_MOS_MODEL=path/to/this/folder`.",
        "",
        "## Licence",
        "",
        "MIT, as the base model (architecture and weights © Microsoft Corporation, released with `distillmos`).",
        "",
    ]
    return "\n".join(lines)
