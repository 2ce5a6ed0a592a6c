"""
Fine-tune Distill-MOS on your own listening test, with `transformers.Trainer` and grouped cross-validation.

    python -m distill_mos.finetune --labels ratings.csv --output-dir runs/mine --cv 5 --group-column item
    python -m distill_mos.finetune --labels ratings.csv --output-dir runs/mine          # saves runs/mine/model/

or from Python: `distill_mos.finetune.finetune("ratings.csv", "runs/mine", cv=5, group_column="item")`.

Runs from a checkout of this repository (`pip install -e ".[finetune]"`): it reads labels with `distill_mos.labels` (as
`eval/benchmark.py` does) and computes figures with the `eval/mos_metrics` module, which a non-editable install does
not carry.
"""

import csv
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .data import (
    FinetuneError,
    LabelledSet,
    RowIssue,
    grouped_folds,
    grouped_holdout,
    is_mos_scale,
    load_labels,
    mos_metric,
)
from .interval import carried_interval, cross_validated_interval
from .training import CrossValidation, FinetuneSettings, TrainingRun, cross_validate, default_jobs, fit, train

__all__ = [
    "FinetuneError",
    "FinetuneResult",
    "FinetuneSettings",
    "RowIssue",
    "cross_validate",
    "finetune",
    "fit",
    "grouped_folds",
    "grouped_holdout",
    "load_labels",
    "train",
]

FIGURES = ("pcc", "srcc", "ktau", "rmse")


@dataclass
class FinetuneResult:
    """
    What a `finetune` call did. `results` is what DIR/results.json holds (with `cv`) or DIR/training.json (without);
    `model_dir` is the saved model repository (without `cv`); `issues` lists every row left out or warned about.
    """

    results: dict
    issues: list[RowIssue] = field(default_factory=list)
    model_dir: Path | None = None
    model: object | None = None  # the fine-tuned DistillMOSModel (without cv), in eval mode
    run: TrainingRun | None = None
    cross_validation: CrossValidation | None = None


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def agreement(predictions: list[float], labels: list[float], mos_scale: bool) -> dict:
    """PCC, SRCC, KTAU and RMSE (None off the MOS scale) from eval/mos_metrics."""
    figures = mos_metric().compute(predictions=predictions, references=labels, mos_scale=mos_scale)
    return {key: figures[key] for key in FIGURES}


def _pipeline_task() -> str | None:
    """The task of the root config's `custom_pipelines` entry (what the saved repository copies), if any."""
    from .export import code_folder

    config = code_folder() / "config.json"
    pipelines = json.loads(config.read_text()).get("custom_pipelines") if config.is_file() else None
    return next(iter(pipelines), None) if pipelines else None


def format_table(results: dict) -> str:
    rows = [("released model", results["baseline"]), ("fine-tuned, out of fold", results["cv"])]
    lines = [f"{'':26}{'n':>5}{'PCC':>8}{'SRCC':>8}{'KTAU':>8}{'RMSE':>8}"]
    for name, figures in rows:
        cells = ["n/a" if figures[k] is None else f"{figures[k]:.3f}" for k in FIGURES]
        lines.append(f"{name:26}{results['n']:>5}" + "".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)


def format_interval(results: dict) -> str | None:
    """The interval line printed after the table (None when the run could not calibrate one)."""
    from ..calibration import MOSInterval

    return f"interval: {MOSInterval(**results['interval']).summary()}" if results.get("interval") else None


def finetune(
    labels: str | Path,
    output_dir: str | Path,
    *,
    cv: int | None = None,
    coverage: float = 0.9,
    group_column: str | None = None,
    label_range: tuple[float, float] | None = None,
    settings: FinetuneSettings | None = None,
    base_model: str | Path | None = None,
    file_column: str = "file",
    mos_column: str | None = None,
    audio_column: str | None = None,
    split: str | None = None,
    channel: str | int = "first",
    device: str = "auto",
    jobs: int | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> FinetuneResult:
    """
    Fine-tunes Distill-MOS on a labelled set (a CSV with `file` and `mos` columns, an audiofolder, a `save_to_disk`
    folder or a Hub id; labels on 1..5, or on `label_range` such as `(0, 100)` for MUSHRA).

    With `cv=K`, it runs grouped K-fold cross-validation (groups from `group_column`; without it every clip is its
    own group) and writes `output_dir/results.json`: `{"n", "baseline": {"pcc", "srcc", "ktau", "rmse"}, "cv": {...}}`
    (the released model's and the fine-tuned models' out-of-fold figures on the same clips; RMSE only for labels on
    the MOS scale), `"interval"`: the split-conformal score interval of the out-of-fold residuals (nominal `coverage`,
    coverage measured on held-out groups; `calibration.MOSInterval.to_config()`, None with the reason in
    `"interval_error"` when the clips are too few) and `output_dir/cv_predictions.csv`. Without `cv`, it trains on
    all clips (less the validation share used for early stopping, by default none below `training.SMALL_SET` clips)
    and saves `output_dir/model/`, a complete model repository whose model card quotes `output_dir/results.json`
    when an earlier `cv` run on the same labels wrote it; when that run also had the same base model, label range,
    group column and settings, the model carries its interval (config `mos_interval`), so that every score of it
    comes with `mos_low` / `mos_high`.

    `jobs`: with `cv` on a CPU, the folds trained at once, each in a process of its own on one torch thread (each
    holds a copy of the cached features); default one per core, at most `cv`. On a GPU the folds run one by one.

    Rows that cannot be used (missing or unreadable file, label not a number / NaN / off the scale, no group) are
    reported in `issues` and on stderr and left out; all other rows are used.
    """
    import torch

    from ..calibration import CONFIG_KEY
    from ..scorer import default_model_location, resolve_device
    from feature_extraction_distillmos import DistillMOSFeatureExtractor
    from modeling_distillmos import DistillMOSModel

    from .export import model_card, save_model_repository
    from .model import prepare_clips

    settings = settings or FinetuneSettings()
    settings.check()
    output_dir = Path(output_dir)
    results_path, model_dir = output_dir / "results.json", output_dir / "model"
    target = results_path if cv else model_dir
    if target.exists() and not overwrite:
        raise FinetuneError(f"{target} exists; choose another --output-dir or pass --overwrite.")
    if cv is not None and cv < 2:
        raise FinetuneError(f"--cv needs at least 2 folds, got {cv}.")
    if not 0 < coverage < 1:  # checked before training, not after a long cross-validation
        raise FinetuneError(f"--coverage must be between 0 and 1 (e.g. 0.9), got {coverage:g}.")

    base = str(base_model or default_model_location())
    model = DistillMOSModel.from_pretrained(base).to(resolve_device(device)).eval()
    feature_extractor = DistillMOSFeatureExtractor.from_pretrained(base)
    config = model.config
    labelled: LabelledSet = load_labels(
        labels, label_range=label_range, group_column=group_column, file_column=file_column, mos_column=mos_column,
        audio_column=audio_column, split=split, mos_min=config.mos_min, mos_max=config.mos_max,
    )
    if verbose:
        mode = "raw windows (--train-all)" if settings.train_all else "convolutional features, computed once"
        print(f"{len(labelled.clips)} rated rows in {labelled.name}"
              + (f" ({labelled.n_unrated} unrated skipped)" if labelled.n_unrated else "")
              + f"; decoding and preparing {mode} ...", flush=True)
    prepared, decode_issues = prepare_clips(model, feature_extractor, labelled.clips,
                                            cache_features=not settings.train_all, channel=channel)
    issues = labelled.issues + decode_issues
    for issue in issues:
        print(issue, file=sys.stderr)
    if len(prepared) < 2:
        raise FinetuneError(f"only {len(prepared)} usable clip(s) in {labelled.name}; fine-tuning needs more "
                            "(see the errors above).")
    mos_scale = is_mos_scale(label_range, config.mos_min, config.mos_max)
    common = {
        "labels": labelled.name,
        "base_model": base,
        "label_range": list(label_range) if label_range else None,
        "mos_scale": mos_scale,
        "group_column": group_column,
        "settings": asdict(settings),
        "n_unrated": labelled.n_unrated,
        "skipped": [asdict(i) for i in issues if i.level == "error"],
        "warnings": [asdict(i) for i in issues if i.level == "warning"],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)

    if cv:
        on_cpu = next(model.parameters()).device.type == "cpu"  # a GPU trains one fold at a time
        folds_at_once = (jobs or default_jobs(cv)) if on_cpu else 1
        crossval = cross_validate(model, prepared, cv, settings, verbose=verbose, jobs=folds_at_once)
        references = [c.clip.label for c in prepared]
        interval, why_not = cross_validated_interval(
            prepared, crossval.predictions, coverage=coverage, folds=cv, data=labelled.name,
            group_column=group_column, label_range=label_range or (config.mos_min, config.mos_max),
        )
        if interval is None:  # a small test still gets its figures
            print(f"note: no score interval: {why_not}", file=sys.stderr)
        results = _json_safe({
            "n": len(prepared),
            "baseline": agreement(crossval.baseline, references, mos_scale),
            "cv": agreement(crossval.predictions, references, mos_scale),
            "k": cv,
            "interval": interval.to_config() if interval else None,
            "interval_error": why_not,
            **common,
            "folds": crossval.folds,
        })
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        with (output_dir / "cv_predictions.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "label", "group", "fold", "released_model", "fine_tuned_out_of_fold"])
            columns = zip(prepared, crossval.fold_of, crossval.baseline, crossval.predictions)
            for clip, fold, base_score, score in columns:
                writer.writerow([clip.clip.item, clip.clip.label, clip.clip.group or "", fold + 1,
                                 f"{base_score:.4f}", f"{score:.4f}"])
        if verbose:
            print(format_table(results))
            if interval is not None:
                print(format_interval(results))
            print(f"Wrote {results_path} and {output_dir / 'cv_predictions.csv'}")
        return FinetuneResult(results, issues, cross_validation=crossval)

    run = fit(model, prepared, settings, verbose=verbose)
    cv_results = None
    if results_path.is_file():
        earlier = json.loads(results_path.read_text())
        if earlier.get("labels") == labelled.name and earlier.get("n") == len(prepared):
            cv_results = earlier
        elif verbose:
            print(f"note: {results_path} is from other labels or rows; the model card leaves it out.", file=sys.stderr)
    interval, why_not = carried_interval(cv_results, _json_safe(common))
    if why_not and cv_results is not None:
        print(f"note: the model carries no score interval: {why_not}", file=sys.stderr)
    # Set or cleared: a base model calibrated on other data must not pass its interval on to new weights.
    if interval is not None:
        setattr(model.config, CONFIG_KEY, interval.to_config())
    elif hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    card = model_card(
        base_model=base, data_name=labelled.name, n_clips=len(prepared), n_train=run.n_train,
        n_validation=run.n_validation, label_range=label_range, cv_results=cv_results,
        settings={**asdict(settings), **(run.search["chosen"] if run.search else {})}, pipeline_task=_pipeline_task(),
        interval=interval,
    )
    save_model_repository(model, feature_extractor, model_dir, card)
    summary = {key: value for key, value in asdict(run).items() if key != "log_history"}
    results = _json_safe({"n": len(prepared), **summary, **common, "model_dir": str(model_dir),
                          "cross_validated": cv_results is not None,
                          "interval": interval.to_config() if interval else None})
    (output_dir / "training.json").write_text(json.dumps(results, indent=2) + "\n")
    if verbose:
        print(f"Training MSE {run.train_loss_before:.4f} -> {run.train_loss_after:.4f} over {run.steps_run} steps "
              f"({run.epochs_run:.3g} epochs). Saved the model to {model_dir}")
    return FinetuneResult(results, issues, model_dir=model_dir, model=model, run=run)
