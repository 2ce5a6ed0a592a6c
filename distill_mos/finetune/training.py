"""Training with `transformers.Trainer` and grouped K-fold cross-validation of the fine-tuned model."""

import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from modeling_distillmos import DistillMOSModel

from .data import FinetuneError, grouped_folds, grouped_holdout
from .model import ClipDataset, ClipWindows, DistillMOSClipRegressor, WindowCollator, predict


@dataclass
class FinetuneSettings:
    """
    Hyper-parameters of a fine-tuning run (the `TrainingArguments` it builds, plus what to train).

    Args:
        learning_rate: AdamW peak learning rate, decayed linearly to 0 over `epochs`.
        epochs: most passes over the training clips (fewer when early stopping ends the run).
        batch_size: clips per optimizer step (all windows of each clip go into the step).
        weight_decay: AdamW weight decay.
        seed: seeds the weights' data order, the validation split and the folds: same seed, same figures.
        validation_fraction: share of the training clips (whole groups, with a group column) held out to stop early
            when their loss has not improved for `early_stopping_patience` epochs; the best epoch's weights are kept.
            0 trains on every clip for exactly `epochs`.
        early_stopping_patience: epochs without improvement of the validation loss before training stops.
        warmup: share of the optimizer steps over which the learning rate rises linearly from 0 (first steps on a
            pretrained head are otherwise the largest and least stable).
        train_all: train every parameter on raw windows (the convolutions too) instead of the cached-feature head.
    """

    learning_rate: float = 3e-5
    epochs: int = 15
    batch_size: int = 8
    weight_decay: float = 0.01
    seed: int = 42
    validation_fraction: float = 0.15
    early_stopping_patience: int = 3
    warmup: float = 0.1
    train_all: bool = False

    def check(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise FinetuneError(f"the learning rate must be a positive number, got {self.learning_rate}.")
        if self.epochs < 1 or self.batch_size < 1 or self.early_stopping_patience < 1:
            raise FinetuneError("epochs, batch size and early-stopping patience must each be at least 1.")
        if self.weight_decay < 0:
            raise FinetuneError(f"the weight decay must not be negative, got {self.weight_decay}.")
        if not 0 <= self.warmup < 1:
            raise FinetuneError(f"the warm-up share must be in [0, 1), got {self.warmup}.")
        if not 0 <= self.validation_fraction < 1:
            raise FinetuneError(f"the validation fraction must be in [0, 1), got {self.validation_fraction}.")


@dataclass
class TrainingRun:
    """What one `train` call did: sizes, epochs, and the training clips' MSE before and after (eval mode)."""

    n_train: int
    n_validation: int
    epochs_run: float
    best_validation_loss: float | None
    train_loss_before: float
    train_loss_after: float
    log_history: list[dict] = field(default_factory=list)


class _EpochPrinter(TrainerCallback):
    """One short line per epoch instead of Trainer's dict dumps."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        names = {"loss": "loss", "eval_loss": "validation loss"}
        parts = [f"{names[key]} {value:.4g}" for key, value in (logs or {}).items() if key in names]
        if parts:
            print(f"{self.prefix}epoch {state.epoch:.0f}: " + ", ".join(parts), flush=True)


def _mse(regressor: DistillMOSClipRegressor, clips: Sequence[ClipWindows], batch_size: int) -> float:
    predictions = predict(regressor, clips, batch_size)
    return sum((p - c.clip.target) ** 2 for p, c in zip(predictions, clips)) / max(len(clips), 1)


def train(
    model: DistillMOSModel,
    train_clips: Sequence[ClipWindows],
    validation_clips: Sequence[ClipWindows] = (),
    settings: FinetuneSettings | None = None,
    *,
    verbose: bool = True,
    prefix: str = "",
) -> TrainingRun:
    """
    Fine-tunes `model` in place with `transformers.Trainer` on prepared clips (see `prepare_clips`): the cached-feature
    head by default, every parameter with `settings.train_all` (then the clips must hold raw windows). With
    validation clips, it evaluates after every epoch, stops early and restores the best epoch's weights.
    """
    settings = settings or FinetuneSettings()
    settings.check()
    if not train_clips:
        raise FinetuneError("no clips to train on.")
    cached = not settings.train_all
    if any((clip.inputs.dim() == 3) != cached for clip in list(train_clips) + list(validation_clips)):
        raise FinetuneError("the clips were prepared for the other mode (cached features vs --train-all windows).")
    regressor = DistillMOSClipRegressor(model, cached_features=cached)
    loss_before = _mse(regressor, train_clips, settings.batch_size)
    validate = len(validation_clips) > 0
    with tempfile.TemporaryDirectory(prefix="distill-mos-finetune-") as work:
        args = TrainingArguments(
            output_dir=work,
            seed=settings.seed,
            data_seed=settings.seed,
            learning_rate=settings.learning_rate,
            num_train_epochs=settings.epochs,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.batch_size,
            weight_decay=settings.weight_decay,
            # whole steps, rounded down: a ratio would round up, and a one-step run would then train at lr 0
            warmup_steps=int(settings.warmup * math.ceil(len(train_clips) / settings.batch_size) * settings.epochs),
            eval_strategy="epoch" if validate else "no",
            save_strategy="best" if validate else "no",
            load_best_model_at_end=validate,
            metric_for_best_model="loss" if validate else None,
            greater_is_better=False if validate else None,
            save_only_model=True,
            save_total_limit=1,
            logging_strategy="epoch",
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
            trainer.add_callback(_EpochPrinter(prefix))
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
        epochs_run=float(state.epoch or 0),
        best_validation_loss=state.best_metric if validate else None,
        train_loss_before=loss_before,
        train_loss_after=_mse(regressor, train_clips, settings.batch_size),
        log_history=list(state.log_history),
    )


def clip_groups(clips: Sequence[ClipWindows]) -> list[str]:
    """Each clip's group; a clip without one is its own group."""
    return [c.clip.group if c.clip.group is not None else f"\0row {i}" for i, c in enumerate(clips)]


def train_with_validation(model, clips: Sequence[ClipWindows], settings: FinetuneSettings, **kwargs) -> TrainingRun:
    """`train` with `settings.validation_fraction` of the clips (whole groups) held out for early stopping."""
    train_rows, validation_rows = grouped_holdout(clip_groups(clips), settings.validation_fraction, settings.seed)
    if settings.validation_fraction > 0 and not validation_rows and kwargs.get("verbose", True):
        print("note: too few groups (fewer than 3) to hold some out for early stopping; training for the full "
              f"{settings.epochs} epochs on every clip.", flush=True)
    return train(model, [clips[i] for i in train_rows], [clips[i] for i in validation_rows], settings, **kwargs)


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


def cross_validate(
    model: DistillMOSModel, clips: Sequence[ClipWindows], k: int, settings: FinetuneSettings, *, verbose: bool = True
) -> CrossValidation:
    """
    Grouped K-fold cross-validation: for each fold, `model`'s starting weights are fine-tuned on the other folds
    (with their own validation split for early stopping) and score the held-out fold. No group is in both the
    training and the test part of a split. `model` is left with its starting weights.
    """
    settings.check()
    start = snapshot(model)
    groups = clip_groups(clips)
    folds = grouped_folds(groups, k, settings.seed)
    cached = not settings.train_all
    baseline = predict(DistillMOSClipRegressor(model, cached_features=cached), clips, settings.batch_size)
    model.eval()
    predictions: list[float | None] = [None] * len(clips)
    fold_of = [0] * len(clips)
    summaries = []
    try:
        for number, test_rows in enumerate(folds):
            test = set(test_rows)
            rest = [i for i in range(len(clips)) if i not in test]
            model.load_state_dict(start)
            train_rows, validation_rows = grouped_holdout([groups[i] for i in rest], settings.validation_fraction,
                                                          settings.seed + number)
            if verbose:
                print(f"fold {number + 1}/{k}: {len(rest)} training clips ({len(validation_rows)} for validation), "
                      f"{len(test_rows)} test clips", flush=True)
                if settings.validation_fraction > 0 and not validation_rows:
                    print(f"  note: fewer than 3 groups to train on: no early stopping, {settings.epochs} epochs",
                          flush=True)
            run = train(model, [clips[rest[i]] for i in train_rows], [clips[rest[i]] for i in validation_rows],
                        settings, verbose=verbose, prefix=f"  fold {number + 1} ")
            scores = predict(DistillMOSClipRegressor(model, cached_features=cached), [clips[i] for i in test_rows],
                             settings.batch_size)
            for row, score in zip(test_rows, scores):
                predictions[row], fold_of[row] = score, number
            summary = {key: value for key, value in asdict(run).items() if key != "log_history"}
            summaries.append({"fold": number + 1, "n_test": len(test_rows),
                              "n_test_groups": len({groups[i] for i in test_rows}), **summary})
    finally:
        model.load_state_dict(start)
        model.eval()
    return CrossValidation(k, fold_of, predictions, baseline, summaries)
