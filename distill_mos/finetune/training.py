"""Training with `transformers.Trainer` and grouped K-fold cross-validation of the fine-tuned model."""

import concurrent.futures
import logging
import math
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from modeling_distillmos import DistillMOSModel

from .data import FinetuneError, grouped_folds, grouped_holdout
from .model import ClipDataset, ClipWindows, DistillMOSClipRegressor, WindowCollator, predict


# Defaults chosen on bench/finetune_benchmark.py's synthetic listening test (bench/README.md, "Fine-tuning settings"):
# a fixed number of optimizer steps, one clip per step, no validation split below SMALL_SET clips.
DEFAULT_STEPS = 600
SMALL_SET = 1000  # clips: below this, a validation split costs the training data more than early stopping gains
LARGE_SET_VALIDATION_FRACTION = 0.1
TRAIN_LAYERS = ("head", "last", "pooling")
LOSSES = ("clip", "window")


@dataclass
class FinetuneSettings:
    """
    Hyper-parameters of a fine-tuning run (the `TrainingArguments` it builds, plus what to train).

    Counted in optimizer steps, not epochs: what moves a pretrained head is the number of (learning-rate weighted)
    updates, and an epoch of a 50-file test is a tenth of one of a 500-file test.

    Args:
        learning_rate: AdamW peak learning rate, decayed linearly to 0 over the steps.
        steps: optimizer steps (`DEFAULT_STEPS` when neither `steps` nor `epochs` is given), whatever the set's size.
        epochs: passes over the training clips instead of `steps` (the step count then grows with the set).
        batch_size: clips per optimizer step (all windows of each clip go into the step).
        weight_decay: AdamW weight decay.
        seed: seeds the weights' data order, the validation split and the folds: same seed, same figures.
        validation_fraction: share of the training clips (whole groups, with a group column) held out to stop early
            when their loss has not improved for `early_stopping_patience` evaluations (ten per run); the best
            evaluation's weights are kept. None (default): none below `SMALL_SET` training clips (small tests cannot
            spare the data), `LARGE_SET_VALIDATION_FRACTION` from there. 0: never.
        early_stopping_patience: evaluations without improvement of the validation loss before training stops.
        warmup: share of the optimizer steps over which the learning rate rises linearly from 0.
        train_layers: which layers train on the cached features: "head" (projection, transformer and pooling),
            "last" (the last transformer layer and the pooling) or "pooling" (the attention pooling and read-out).
        loss: "clip" (the MSE of each clip's score, the mean of its windows, as the model scores) or "window" (each
            window's score towards its clip's label). The two are the same for clips of one window (up to 7.68 s).
        train_all: train every parameter on raw windows (the convolutions too) instead of the cached-feature head.
        search: pick the learning rate and steps by an inner grouped cross-validation on the training clips
            (`search.SEARCH_GRID`); with `cv`, inside each outer fold, so the out-of-fold figure stays honest.
    """

    learning_rate: float = 1e-4
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 1
    weight_decay: float = 0.01
    seed: int = 42
    validation_fraction: float | None = None
    early_stopping_patience: int = 3
    warmup: float = 0.1
    train_layers: str = "head"
    loss: str = "clip"
    train_all: bool = False
    search: bool = False

    def check(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise FinetuneError(f"the learning rate must be a positive number, got {self.learning_rate}.")
        if self.steps is not None and self.epochs is not None:
            raise FinetuneError("give the training length as steps or as epochs, not both.")
        if (self.steps is not None and self.steps < 1) or (self.epochs is not None and not self.epochs > 0):
            raise FinetuneError("steps must be at least 1 and epochs more than 0.")
        if self.batch_size < 1 or self.early_stopping_patience < 1:
            raise FinetuneError("the batch size and the early-stopping patience must each be at least 1.")
        if self.weight_decay < 0:
            raise FinetuneError(f"the weight decay must not be negative, got {self.weight_decay}.")
        if not 0 <= self.warmup < 1:
            raise FinetuneError(f"the warm-up share must be in [0, 1), got {self.warmup}.")
        if self.validation_fraction is not None and not 0 <= self.validation_fraction < 1:
            raise FinetuneError(f"the validation fraction must be in [0, 1), got {self.validation_fraction}.")
        if self.train_layers not in TRAIN_LAYERS:
            raise FinetuneError(f"train_layers must be one of {TRAIN_LAYERS}, got {self.train_layers!r}.")
        if self.loss not in LOSSES:
            raise FinetuneError(f"loss must be one of {LOSSES}, got {self.loss!r}.")
        if self.train_all and self.train_layers != "head":
            raise FinetuneError("--train-all trains every layer; it cannot be combined with --train-layers.")

    def steps_for(self, n_train: int) -> int:
        """Optimizer steps of a run on `n_train` clips: `steps`, else `epochs` passes, else `DEFAULT_STEPS`."""
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))
        return self.steps if self.steps is not None else DEFAULT_STEPS

    def validation_fraction_for(self, n_clips: int) -> float:
        """The validation share of a run on `n_clips`: as given, else none for a small set (`SMALL_SET`)."""
        if self.validation_fraction is not None:
            return self.validation_fraction
        return 0.0 if n_clips < SMALL_SET else LARGE_SET_VALIDATION_FRACTION


@dataclass
class TrainingRun:
    """
    What one `train` call did: sizes, optimizer steps (and the epochs they make), and the training clips' MSE before
    and after (eval mode; None when not measured).
    """

    n_train: int
    n_validation: int
    steps_run: int
    epochs_run: float
    best_validation_loss: float | None
    train_loss_before: float | None
    train_loss_after: float | None
    log_history: list[dict] = field(default_factory=list)
    search: dict | None = None  # with settings.search: the grid's inner figures and the chosen settings


class _LogPrinter(TrainerCallback):
    """One short line per logging step instead of Trainer's dict dumps."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        names = {"loss": "loss", "eval_loss": "validation loss"}
        parts = [f"{names[key]} {value:.4g}" for key, value in (logs or {}).items() if key in names]
        if parts:
            print(f"{self.prefix}step {state.global_step}/{state.max_steps}: " + ", ".join(parts), flush=True)


def _mse(regressor: DistillMOSClipRegressor, clips: Sequence[ClipWindows]) -> float:
    predictions = predict(regressor, clips)
    return sum((p - c.clip.target) ** 2 for p, c in zip(predictions, clips)) / max(len(clips), 1)


def train(
    model: DistillMOSModel,
    train_clips: Sequence[ClipWindows],
    validation_clips: Sequence[ClipWindows] = (),
    settings: FinetuneSettings | None = None,
    *,
    verbose: bool = True,
    prefix: str = "",
    measure_loss: bool = True,
) -> TrainingRun:
    """
    Fine-tunes `model` in place with `transformers.Trainer` on prepared clips (see `prepare_clips`) for
    `settings.steps_for(len(train_clips))` optimizer steps: the cached-feature head by default, every parameter with
    `settings.train_all` (then the clips must hold raw windows). With validation clips, it evaluates ten times per
    run, stops early and restores the best evaluation's weights. `measure_loss` adds the training clips' MSE
    before and after (two passes over them in eval mode).
    """
    settings = settings or FinetuneSettings()
    settings.check()
    if not train_clips:
        raise FinetuneError("no clips to train on.")
    cached = not settings.train_all
    if any((clip.inputs.dim() == 3) != cached for clip in list(train_clips) + list(validation_clips)):
        raise FinetuneError("the clips were prepared for the other mode (cached features vs --train-all windows).")
    regressor = DistillMOSClipRegressor(model, cached_features=cached, train_layers=settings.train_layers,
                                        loss=settings.loss)
    loss_before = _mse(regressor, train_clips) if measure_loss else None
    validate = len(validation_clips) > 0
    steps = settings.steps_for(len(train_clips))
    every = max(1, steps // 10)
    with tempfile.TemporaryDirectory(prefix="distill-mos-finetune-") as work:
        args = TrainingArguments(
            output_dir=work,
            seed=settings.seed,
            data_seed=settings.seed,
            learning_rate=settings.learning_rate,
            max_steps=steps,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.batch_size,
            weight_decay=settings.weight_decay,
            # whole steps, rounded down: a ratio would round up, and a one-step run would then train at lr 0
            warmup_steps=int(settings.warmup * steps),
            eval_strategy="steps" if validate else "no",
            eval_steps=every if validate else None,
            save_strategy="best" if validate else "no",
            load_best_model_at_end=validate,
            metric_for_best_model="loss" if validate else None,
            greater_is_better=False if validate else None,
            save_only_model=True,
            save_total_limit=1,
            logging_strategy="steps",
            logging_steps=every,
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            remove_unused_columns=False,
            label_names=["labels"],
            prediction_loss_only=True,
            use_cpu=model.device.type == "cpu",
        )
        callbacks = [EarlyStoppingCallback(settings.early_stopping_patience)] if validate else []
        trainer = Trainer(
            model=regressor,
            args=args,
            data_collator=WindowCollator(),
            train_dataset=ClipDataset(train_clips),
            eval_dataset=ClipDataset(validation_clips) if validate else None,
            callbacks=callbacks,
        )
        for noisy in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(noisy)
        if verbose:
            trainer.add_callback(_LogPrinter(prefix))
        transformers_logger = logging.getLogger("transformers.trainer")
        level = transformers_logger.level
        transformers_logger.setLevel(logging.ERROR)  # "Trainer.model is not a PreTrainedModel": by design
        try:
            trainer.train()
        finally:
            transformers_logger.setLevel(level)
        state = trainer.state
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return TrainingRun(
        n_train=len(train_clips),
        n_validation=len(validation_clips),
        steps_run=int(state.global_step),
        epochs_run=float(state.epoch or 0),
        best_validation_loss=state.best_metric if validate else None,
        train_loss_before=loss_before,
        train_loss_after=_mse(regressor, train_clips) if measure_loss else None,
        log_history=list(state.log_history),
    )


def clip_groups(clips: Sequence[ClipWindows]) -> list[str]:
    """Each clip's group; a clip without one is its own group."""
    return [c.clip.group if c.clip.group is not None else f"\0row {i}" for i, c in enumerate(clips)]


def fit(
    model: DistillMOSModel,
    clips: Sequence[ClipWindows],
    settings: FinetuneSettings,
    *,
    seed: int | None = None,
    verbose: bool = True,
    prefix: str = "",
    measure_loss: bool = True,
) -> TrainingRun:
    """
    Trains `model` in place on `clips` as `settings` say: with `settings.search`, the learning rate and steps are
    first chosen by an inner grouped cross-validation on these clips only (`search.search_settings`); then a
    validation split of whole groups is held out for early stopping where `validation_fraction_for` asks for one.
    `seed` (default `settings.seed`) seeds the split. Returns the run, with `chosen` set by a search.
    """
    from .search import search_settings

    seed = settings.seed if seed is None else seed
    search = None
    if settings.search:
        search = search_settings(model, clips, settings, seed=seed, verbose=verbose, prefix=prefix)
        settings = search.settings
    fraction = settings.validation_fraction_for(len(clips))
    train_rows, validation_rows = grouped_holdout(clip_groups(clips), fraction, seed)
    if fraction > 0 and not validation_rows and verbose:
        print(f"{prefix}note: too few groups (fewer than 3) to hold some out for early stopping; training for "
              "every step on every clip.", flush=True)
    run = train(model, [clips[i] for i in train_rows], [clips[i] for i in validation_rows], settings,
                verbose=verbose, prefix=prefix, measure_loss=measure_loss)
    if search is not None:
        run.search = search.summary()
    return run


def snapshot(model: DistillMOSModel) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer, to start each fold from the same weights."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@dataclass
class CrossValidation:
    """Out-of-fold predictions of the fine-tuned models and the base model's predictions on the same clips."""

    k: int
    fold_of: list[int]
    predictions: list[float]
    baseline: list[float]
    folds: list[dict]


def _train_fold(model: DistillMOSModel, start: dict, clips: Sequence[ClipWindows], test_rows: list[int], number: int,
                settings: FinetuneSettings, verbose: bool) -> tuple[list[float], dict]:
    """One fold: `start`'s weights fine-tuned on the clips outside `test_rows`; their scores and the run's summary."""
    test = set(test_rows)
    rest = [clips[i] for i in range(len(clips)) if i not in test]
    model.load_state_dict(start)
    run = fit(model, rest, settings, seed=settings.seed + number, verbose=verbose, prefix=f"  fold {number + 1} ",
              measure_loss=False)
    scores = predict(DistillMOSClipRegressor(model, cached_features=not settings.train_all), [clips[i] for i in test_rows])
    return scores, {key: value for key, value in asdict(run).items() if key != "log_history"}


_WORKER: dict = {}  # in a fold worker process: the model, its starting weights, the clips and the settings


def _start_worker(config, start, clips, settings) -> None:
    """A fold worker's set-up, once per process: the clips and weights cross to it once, not once per fold."""
    torch.set_num_threads(1)
    _WORKER.update(model=DistillMOSModel(config), start=start, clips=clips, settings=settings)


def _fold_in_worker(test_rows: list[int], number: int) -> tuple[list[float], dict]:
    """`_train_fold` in a worker process (see `_start_worker`)."""
    w = _WORKER
    return _train_fold(w["model"], w["start"], w["clips"], test_rows, number, w["settings"], verbose=False)


def default_jobs(k: int) -> int:
    """Folds trained side by side by default: one per core, each on one torch thread (at most `k`)."""
    return max(1, min(k, os.cpu_count() or 1))


def cross_validate(
    model: DistillMOSModel, clips: Sequence[ClipWindows], k: int, settings: FinetuneSettings, *, verbose: bool = True,
    jobs: int = 1,
) -> CrossValidation:
    """
    Grouped K-fold cross-validation: for each fold, `model`'s starting weights are fine-tuned on the other folds
    (`fit`: a search and a validation split, if any, use those folds only) and score the held-out fold. No group is
    in both the training and the test part of a split. `model` is left with its starting weights.

    `jobs` > 1 trains that many folds at once, each in a process of its own on one torch thread (`spawn`, so that
    no thread pool of this process is inherited): one small model's steps use one core better than two threads do
    (on 2 cores, `--cv 5` on 128 clips: bench/README.md). The folds, seeds and results are the same either way, to
    the float rounding of one thread against several.
    """
    settings.check()
    start = snapshot(model)
    groups = clip_groups(clips)
    folds = grouped_folds(groups, k, settings.seed)
    baseline = predict(DistillMOSClipRegressor(model, cached_features=not settings.train_all), clips)
    model.eval()
    predictions: list[float | None] = [None] * len(clips)
    fold_of = [0] * len(clips)
    summaries: list[dict | None] = [None] * len(folds)

    def done(number: int, test_rows: list[int], scores: list[float], summary: dict) -> None:
        for row, score in zip(test_rows, scores):
            predictions[row], fold_of[row] = score, number
        summaries[number] = {"fold": number + 1, "n_test": len(test_rows),
                             "n_test_groups": len({groups[i] for i in test_rows}), **summary}

    try:
        if jobs > 1 and len(folds) > 1:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(
                min(jobs, len(folds)), mp_context=context, initializer=_start_worker,
                initargs=(model.config, start, list(clips), settings),
            ) as pool:
                futures = {pool.submit(_fold_in_worker, rows, number): (number, rows) for number, rows in enumerate(folds)}
                if verbose:
                    print(f"{len(folds)} folds, {min(jobs, len(folds))} at a time (one process and torch thread each)",
                          flush=True)
                for future in concurrent.futures.as_completed(futures):
                    number, rows = futures[future]
                    done(number, rows, *future.result())
                    if verbose:
                        print(f"fold {number + 1}/{k} done: {len(clips) - len(rows)} training clips, {len(rows)} test "
                              "clips", flush=True)
        else:
            for number, test_rows in enumerate(folds):
                if verbose:
                    print(f"fold {number + 1}/{k}: {len(clips) - len(test_rows)} training clips, {len(test_rows)} test "
                          "clips", flush=True)
                done(number, test_rows, *_train_fold(model, start, clips, test_rows, number, settings, verbose))
    finally:
        model.load_state_dict(start)
        model.eval()
    return CrossValidation(k, fold_of, predictions, baseline, summaries)
