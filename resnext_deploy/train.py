"""Train a registered architecture on an ImageFolder or the built-in digits, keep the best epoch.

The saved checkpoint holds the state dict and the full :class:`ModelSpec` (architecture, class
names, input size, normalisation), so ``export`` needs no other flags.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from resnext_deploy.data import DIGITS, DIGITS_MEAN, DIGITS_STD, Dataset, Split, load_dataset
from resnext_deploy.errors import ConfigError, TrainingError
from resnext_deploy.fileio import atomic_write_bytes, check_writable_dir, save_figure
from resnext_deploy.models.registry import ARCHS, build_model
from resnext_deploy.preprocess import normalize
from resnext_deploy.spec import IMAGENET_MEAN, IMAGENET_STD, ArchConfig, ModelSpec, Optimizer
from resnext_deploy.validate import check_float, check_int

OPTIMIZERS = tuple(o.value for o in Optimizer)
CHECKPOINT_FILE = "best.pth"
CURVES_FILE = "curves.png"
RUN_FILES = (CHECKPOINT_FILE, CURVES_FILE)


# Bounds on what a run can finish on one machine: a seed numpy and torch both take, a batch that
# fits in memory at a few hundred pixels, a side no ResNeXt is trained at beyond.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 4096
MAX_INPUT_SIZE = 1024
# Every class keeps at least one training image (see data.split_indices); past 0.9 the training
# split is a handful of images per class.
MAX_VAL_FRACTION = 0.9


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    data: str = DIGITS
    arch: str = "resnext11_mini"
    out_dir: Path = Path("runs/train")
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    seed: int = 0
    val_fraction: float = 0.2
    input_size: int | None = None
    augment: bool = False
    overwrite: bool = False  # replace the best.pth of an earlier run in out_dir

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        ARCHS.get(self.arch)  # an unknown name is refused listing the known ones
        check_int(self.epochs, "epochs", 1, MAX_EPOCHS)
        check_int(self.batch_size, "batch size", 1, MAX_BATCH_SIZE)
        check_float(self.lr, "learning rate", 0.0, math.inf, low_open=True)
        check_float(self.weight_decay, "weight decay", 0.0, math.inf)
        check_int(self.seed, "seed", 0, MAX_SEED)
        check_float(self.val_fraction, "val_fraction", 0.0, MAX_VAL_FRACTION, low_open=True)
        if self.input_size is not None:
            check_int(self.input_size, "input size", 1, MAX_INPUT_SIZE)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float


@dataclass
class TrainResult:
    checkpoint: Path
    spec: ModelSpec
    best_epoch: int
    best_val_acc: float
    history: list[EpochStats]
    confusion: np.ndarray
    curves: Path | None
    skipped: list[str] = field(default_factory=list)
    val_images: Split | None = None


class TrainObserver(Protocol):
    def start_epoch(self, epoch: int, batches: int) -> None: ...
    def advance(self) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


class SilentObserver:
    def start_epoch(self, epoch: int, batches: int) -> None:
        return None

    def advance(self) -> None:
        return None

    def end_epoch(self, stats: EpochStats) -> None:
        return None


def train(config: TrainConfig, observer: TrainObserver | None = None) -> TrainResult:
    """Train, validate every epoch, save the best epoch's checkpoint and the curves.

    Refuses, before any work, a run folder that :func:`check_run_folder` refuses:
    :class:`ConfigError`. Raises :class:`TrainingError`, saving nothing, when the loss stops
    being finite.
    """
    created = not config.out_dir.exists()
    check_run_folder(config.out_dir, overwrite=config.overwrite)
    try:
        return _train(config, observer or SilentObserver())
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                config.out_dir.rmdir()  # only if empty: leave nothing behind for a failed run
        raise


def check_run_folder(out_dir: Path, *, overwrite: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``out_dir`` can take a run's files (:data:`RUN_FILES`):
    it is new or empty, or an earlier run (it holds a :data:`CHECKPOINT_FILE`) and
    ``overwrite`` allows replacing that run's files. Any other folder holds the user's files,
    which a run would overwrite (a ``curves.png``) or mix with its own: it is refused even with
    ``overwrite``. Also refuses a folder files cannot be created in. Creates nothing."""
    if out_dir.is_dir():
        entries = sorted(p.name for p in out_dir.iterdir())
        if (out_dir / CHECKPOINT_FILE).is_file():
            if not overwrite:
                raise ConfigError(
                    f"{out_dir} already holds a trained model ({CHECKPOINT_FILE}); choose a new "
                    "run folder, or allow replacing it (force)"
                )
        elif entries:
            raise ConfigError(
                f"{out_dir} is not a training run (it holds {_listed(entries)} and no "
                f"{CHECKPOINT_FILE}); refusing to write {' and '.join(RUN_FILES)} into it: "
                "choose a new or empty run folder"
            )
    check_writable_dir(out_dir, "run folder")


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


@dataclass(frozen=True)
class _Run:
    """What every epoch of one training run works with."""

    config: TrainConfig
    spec: ModelSpec
    data: Dataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    rng: np.random.Generator
    observer: TrainObserver


@dataclass(frozen=True)
class _BestEpoch:
    """The epoch with the highest validation accuracy so far, and a copy of its weights."""

    epoch: int
    val_acc: float
    state: dict[str, torch.Tensor]


def _train(config: TrainConfig, observer: TrainObserver) -> TrainResult:
    run = _start_run(config, observer)
    history: list[EpochStats] = []
    best: _BestEpoch | None = None
    for epoch in range(1, config.epochs + 1):
        stats = _train_epoch(run, epoch)
        history.append(stats)
        observer.end_epoch(stats)
        if best is None or stats.val_acc > best.val_acc:
            state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
            best = _BestEpoch(epoch, stats.val_acc, state)
    assert best is not None  # epochs >= 1 is validated by TrainConfig
    return _save_best(run, best, history)


def _start_run(config: TrainConfig, observer: TrainObserver) -> _Run:
    """Load the data and build the seeded model: the seed is set before the weights are drawn,
    so the same config trains the same model."""
    cfg = ARCHS.get(config.arch)
    input_size = config.input_size or cfg.input_size
    data = load_dataset(config.data, input_size, config.val_fraction, config.seed)
    spec = _model_spec(config, cfg, data, input_size)
    torch.manual_seed(config.seed)
    model = build_model(cfg, spec.num_classes)
    optimizer = _optimizer(config, model)
    return _Run(
        config=config,
        spec=spec,
        data=data,
        model=model,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        rng=np.random.default_rng(config.seed),
        observer=observer,
    )


def _model_spec(config: TrainConfig, cfg: ArchConfig, data: Dataset, input_size: int) -> ModelSpec:
    """The spec saved with the checkpoint: the digits keep their own mean/std, any other data
    ImageNet's."""
    mean, std = (
        (DIGITS_MEAN, DIGITS_STD) if config.data == DIGITS else (IMAGENET_MEAN, IMAGENET_STD)
    )
    return ModelSpec(
        arch=config.arch,
        num_classes=len(data.class_names),
        input_size=input_size,
        resize=input_size,
        mean=mean,
        std=std,
        class_names=data.class_names,
        arch_config=cfg.to_dict(),
    )


def _train_epoch(run: _Run, epoch: int) -> EpochStats:
    """One pass over the shuffled training split, then the loss and accuracy on validation."""
    start = time.perf_counter()
    order = run.rng.permutation(len(run.data.train))
    batches = _batches(order, run.config.batch_size)
    run.observer.start_epoch(epoch, len(batches))
    run.model.train()
    total_loss, correct = 0.0, 0
    for idx in batches:
        loss, right = _train_step(run, idx, epoch)
        total_loss += loss * len(idx)
        correct += right
        run.observer.advance()
    val_loss, val_acc, _ = evaluate(run.model, run.data.val, run.spec, run.config.batch_size)
    if not math.isfinite(val_loss):
        raise TrainingError(
            f"training diverged: the validation loss became {val_loss} after epoch {epoch}; "
            f"nothing was saved. Lower the learning rate (it was {run.config.lr:g})"
        )
    return EpochStats(
        epoch,
        total_loss / len(order),
        correct / len(order),
        val_loss,
        val_acc,
        time.perf_counter() - start,
    )


def _train_step(run: _Run, idx: np.ndarray, epoch: int) -> tuple[float, int]:
    """One optimizer step on the images at ``idx``: (mean loss, correct predictions). A loss
    that is not finite stops the run before it reaches the weights."""
    images = run.data.train.images[idx]
    if run.config.augment:
        images = _augment(images, run.rng)
    x = torch.from_numpy(normalize(images, run.spec))
    y = torch.from_numpy(run.data.train.labels[idx])
    run.optimizer.zero_grad(set_to_none=True)
    logits = _forward(run.model, x)
    loss = run.loss_fn(logits, y)
    if not math.isfinite(loss.item()):
        raise TrainingError(
            f"training diverged: the loss became {loss.item()} in epoch {epoch}; nothing "
            f"was saved. Lower the learning rate (it was {run.config.lr:g})"
        )
    loss.backward()
    run.optimizer.step()
    return loss.item(), int((logits.argmax(1) == y).sum())


def _save_best(run: _Run, best: _BestEpoch, history: list[EpochStats]) -> TrainResult:
    """Restore the best epoch's weights, save them with the spec and history, plot the curves."""
    config, spec, data = run.config, run.spec, run.data
    run.model.load_state_dict(best.state)
    _, _, predictions = evaluate(run.model, data.val, spec, config.batch_size)
    confusion = confusion_matrix(data.val.labels, predictions, spec.num_classes)
    checkpoint = config.out_dir / CHECKPOINT_FILE  # checked before training
    payload = {
        "state_dict": best.state,
        "spec": spec.to_dict(),
        "best_epoch": best.epoch,
        "best_val_acc": best.val_acc,
        "history": [s.__dict__ for s in history],
    }
    _save_atomically(payload, checkpoint)
    curves = plot_curves(history, config.out_dir / CURVES_FILE)
    return TrainResult(
        checkpoint,
        spec,
        best.epoch,
        best.val_acc,
        history,
        confusion,
        curves,
        data.skipped,
        data.val,
    )


def _batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """``order`` in batches of ``size``; a last batch of one image joins the one before it,
    because BatchNorm in training mode cannot normalise a single value per channel."""
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        return model(x)
    except ValueError as exc:
        if "Expected more than 1 value per channel" not in str(exc):
            raise
        raise TrainingError(
            f"a batch of {len(x)} image(s) is too small for BatchNorm in training at this input "
            "size (its last feature map is 1x1); use a batch size of at least 2"
        ) from None


def evaluate(
    model: nn.Module, split: Split, spec: ModelSpec, batch_size: int = 128
) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and predicted labels of ``model`` (eval mode) on ``split``."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, predictions = 0.0, []
    with torch.inference_mode():
        for i in range(0, len(split), batch_size):
            x = torch.from_numpy(normalize(split.images[i : i + batch_size], spec))
            y = torch.from_numpy(split.labels[i : i + batch_size])
            logits = model(x)
            total += float(loss_fn(logits, y))
            predictions.append(logits.argmax(1).numpy())
    pred = np.concatenate(predictions)
    return total / len(split), float((pred == split.labels).mean()), pred


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """``m[i, j]`` = items of true class ``i`` predicted as ``j``."""
    m = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(m, (labels, predictions), 1)
    return m


def plot_curves(history: list[EpochStats], path: Path) -> Path:
    """Training/validation accuracy and loss per epoch, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [s.epoch for s in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    acc.plot(epochs, [s.train_acc for s in history], "o-", label="train")
    acc.plot(epochs, [s.val_acc for s in history], "o-", label="validation")
    acc.set(title="Accuracy", xlabel="epoch", ylim=(0, 1.02))
    loss.plot(epochs, [s.train_loss for s in history], "o-", label="train")
    loss.plot(epochs, [s.val_loss for s in history], "o-", label="validation")
    loss.set(title="Loss (cross-entropy)", xlabel="epoch")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip and a shift of up to 1/8 of the side (zero padded)."""
    out = images.copy()
    flip = rng.random(len(out)) < 0.5
    out[flip] = out[flip, :, ::-1]
    side = out.shape[1]
    pad = max(1, side // 8)
    padded = np.pad(out, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy, dx = rng.integers(0, 2 * pad + 1, size=2)
    return np.ascontiguousarray(padded[:, dy : dy + side, dx : dx + side])


def _save_atomically(payload: dict, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
