"""The training loop: ``fit`` and ``evaluate``.

Speed tricks are marked where they act, each with what it buys.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import NamedTuple

import torch
import torch.nn as nn

from ..data.loader import TensorLoader, as_loader
from ..device import CPUTrainingWarning, get_device, precision_for, profile, seed_everything
from ..errors import DLVisionError, check_positive_int
from .checkpoint import save_checkpoint
from .history import History
from .report import Reporter

__all__ = ["fit", "evaluate", "Evaluation"]

_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_cpu_warned = False


class Evaluation(NamedTuple):
    """Accuracy (0..1) and mean loss of a model on a dataset."""

    accuracy: float
    loss: float


def _model_device(model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else None


def _tensor_device(data):
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0].device
    if isinstance(data, TensorLoader) and data.device_explicit:
        return data.device
    return None


def _place(data, device, name, **kw):
    """A loader on ``device`` for ``data``; tensors or an explicitly placed loader elsewhere is an error."""
    where = _tensor_device(data)
    if where is not None and where != device:
        raise DLVisionError(
            f"the model trains on {device} but {name} is on {where}: put them on one device "
            f"(x.to(device) or TensorLoader(..., device=device)), or pass device={str(where)!r} to fit"
        )
    loader = as_loader(data, name=name, **kw)
    if isinstance(loader, TensorLoader):
        loader.to(device)
    return loader


def _make_optimizer(optimizer, params, lr, momentum, weight_decay):
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(params)
    name = str(optimizer).lower()
    classes = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if name in classes:
        kw = dict(lr=lr, weight_decay=weight_decay)
        if name == "sgd":
            kw.update(momentum=momentum, nesterov=momentum > 0)
        try:
            # Fused: one kernel updates every parameter (instead of a few ops per tensor): fewer launches.
            return classes[name](params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):  # older torch, or a device without fused kernels
            return classes[name](params, **kw)
    raise DLVisionError(
        f"unknown optimizer {optimizer!r}: use 'sgd', 'adam', 'adamw', a torch.optim.Optimizer, "
        "or a function params -> optimizer"
    )


def _fmt_s(s: float) -> str:
    if s < 1:
        return "under a second"
    return "about " + (f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min")


def _warn_cpu(per_batch: float, batches: int, epochs: int) -> None:
    global _cpu_warned
    if _cpu_warned:
        return
    _cpu_warned = True
    total = per_batch * batches * epochs * 1.15  # + about 15 % for validation
    prof = profile()
    tail = (
        "The quick profile applies: the book's examples use fewer epochs and less data on a CPU."
        if prof == "quick"
        else "The full profile is set (DLVISION_PROFILE=full): on a CPU its runs are long."
    )
    warnings.warn(
        f"Training on the CPU (no GPU found). This run should take {_fmt_s(total)} "
        f"({epochs} epoch{'s' * (epochs != 1)} of {_fmt_s(total / epochs)}). {tail} "
        "With a GPU (on Colab: Runtime > Change runtime type > GPU) it is much faster.",
        CPUTrainingWarning,
        stacklevel=3,  # points at the line that called fit
    )


def _check_output(out, y, x):
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DLVisionError(
            f"the model must return class scores of shape (batch, classes), got {shape} for a batch "
            f"of shape {tuple(x.shape)}; flatten the features before the last layer"
        )
    if len(out) != len(y):
        raise DLVisionError(f"the model returned {len(out)} rows for a batch of {len(y)} images")
    top = int(y.max())
    if top >= out.shape[1]:
        raise DLVisionError(
            f"the labels go up to {top} but the model outputs {out.shape[1]} class scores: "
            f"give its last layer at least {top + 1} outputs"
        )


def _forward(model, x, y, loss_fn, dtype, device, first):
    try:
        # Mixed precision: bf16/fp16 matrix maths runs 2-8x faster on tensor cores.
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
            if first:
                _check_output(out, y, x)
            loss = loss_fn(out, y)
    except RuntimeError as exc:
        if not first:
            raise
        raise DLVisionError(
            f"the model failed on a batch of shape {tuple(x.shape)} ({x.dtype}, on {x.device}): "
            f"{str(exc).splitlines()[0]}. Check that the model expects images of this size and number "
            "of channels, and that it is on the same device as the data."
        ) from exc
    return out, loss


@torch.no_grad()
def evaluate(model, data, *, batch_size: int = 1024, loss_fn=None, precision: str = "fp32") -> Evaluation:
    """Accuracy and mean loss of ``model`` on ``data`` (an ImageData, ``(x, y)`` tensors,
    a TensorLoader or a DataLoader), in eval mode, on the model's device.

    Returns ``Evaluation(accuracy, loss)``; the model's train/eval mode is restored.
    """
    if not isinstance(model, nn.Module):
        raise DLVisionError(f"evaluate: model must be a torch.nn.Module, got {type(model).__name__}")
    device = _model_device(model) or torch.device("cpu")
    loader = _place(data, device, "the data", batch_size=batch_size, shuffle=False)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    dtype = _PRECISIONS[precision]
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    try:
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out, loss = _forward(model, x, y, loss_fn, dtype, device, first=i == 0)
            # Sums stay on the device: no .item() per batch, so no GPU sync per batch.
            total_loss += loss.float() * len(y)
            correct += (out.argmax(1) == y).sum()
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise DLVisionError("evaluate: the data is empty")
    return Evaluation(accuracy=correct.item() / n, loss=total_loss.item() / n)


def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    epochs: int,
    lr: float = 1e-3,
    optimizer="adam",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    loss_fn=None,
    schedule: str | None = None,
    device=None,
    precision: str = "auto",
    channels_last: bool = False,
    compile: bool = False,
    early_stopping: int | None = None,
    monitor: str = "val_loss",
    restore_best: bool = True,
    checkpoint=None,
    seed: int | None = None,
    threads: int | None = None,
    progress="auto",
) -> History:
    """Train ``model`` on ``train`` for ``epochs`` epochs; validate on ``val`` after each.

    ``train`` and ``val``: an :class:`~dlvision.data.ImageData`, a pair ``(x, y)`` of
    tensors, a :class:`~dlvision.data.TensorLoader` (for augmentation) or any iterable of
    ``(x, y)`` batches such as a DataLoader. ``optimizer``: ``"adam"``, ``"adamw"``,
    ``"sgd"`` (with Nesterov ``momentum``), an optimizer or a function of the parameters.
    ``schedule``: ``None`` (constant ``lr``), ``"onecycle"`` or ``"cosine"``.
    ``device``: default the model's device if it is on a GPU, else
    :func:`~dlvision.get_device`'s choice. ``precision``: ``"auto"`` (fp16 with gradient
    scaling on CUDA below compute capability 8.0, bf16 from 8.0, fp32 elsewhere),
    ``"fp32"``, ``"bf16"`` or ``"fp16"``. ``early_stopping``: stop after that many epochs
    without improvement of ``monitor`` (``"val_loss"`` or ``"val_acc"``), then put back
    the best weights (``restore_best``). ``checkpoint``: a path where the best model so
    far is saved. ``seed``: seed everything first. ``threads``: CPU threads for this run
    (by default torch's setting; never chosen from the machine's load, so that a seeded
    run gives the same history on a busy machine as on an idle one). ``progress``: ``"auto"``, ``"plain"``, ``"plot"``,
    ``"bar"`` or ``False``.

    Returns a :class:`History`. On a CPU the first run of the process warns how long it
    will take.
    """
    if not isinstance(model, nn.Module):
        raise DLVisionError(f"fit: model must be a torch.nn.Module, got {type(model).__name__}")
    epochs = check_positive_int("epochs", epochs)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise DLVisionError(f"lr must be a positive number, got {lr!r}")
    if precision not in ("auto", *_PRECISIONS):
        raise DLVisionError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if monitor not in ("val_loss", "val_acc"):
        raise DLVisionError(f"monitor must be 'val_loss' or 'val_acc', got {monitor!r}")
    if early_stopping is not None:
        early_stopping = check_positive_int("early_stopping", early_stopping)
        if val is None:
            raise DLVisionError("early_stopping needs validation data: pass val")
    if schedule not in (None, "onecycle", "cosine"):
        raise DLVisionError(f"schedule must be None, 'onecycle' or 'cosine', got {schedule!r}")
    if seed is not None:
        seed_everything(seed)

    # Where to train.
    if device is None:
        device = _model_device(model)
        if device is None or device.type == "cpu":
            device = _tensor_device(train) or get_device(verbose=False)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    precision = precision_for(device) if precision == "auto" else precision
    if precision == "fp16" and device.type != "cuda":
        raise DLVisionError(f"fp16 training needs a CUDA GPU; on {device} use precision='fp32' or 'bf16'")
    dtype = _PRECISIONS[precision]
    if device.type == "cuda" and not (torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled()):
        # cuDNN times its convolution algorithms on the first batch of each shape and keeps the fastest:
        # 10-30 % faster steps. Not after seed_everything(..., deterministic=True), which asked for
        # cuDNN's deterministic algorithms (benchmarking may pick a nondeterministic one).
        torch.backends.cudnn.benchmark = True

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # NHWC: tensor cores read convs without transposes
    train_loader = _place(train, device, "the training data", batch_size=batch_size, shuffle=True)
    val_loader = None if val is None else _place(val, device, "the validation data", batch_size=1024, shuffle=False)
    if isinstance(train_loader, TensorLoader):
        train_loader.channels_last = train_loader.channels_last or channels_last
    # Compiling fuses operations (batch norm + ReLU, the optimizer's element-wise maths...): fewer kernel
    # launches and memory round trips. Compiled for one batch shape: see compiled_shape below.
    step_model = torch.compile(model, dynamic=False) if compile else model
    compiled_shape = None

    opt = _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, momentum, weight_decay)
    n_batches = len(train_loader) if hasattr(train_loader, "__len__") else None
    sched = None
    if schedule is not None:
        if n_batches is None:
            raise DLVisionError("a schedule needs training data with a length (a TensorLoader or a DataLoader)")
        if schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * n_batches)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_batches)
    # fp16 has a narrow range: scale the loss so small gradients do not flush to zero.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = loss_fn or nn.CrossEntropyLoss()

    history = History(device=str(device), precision=precision)
    history._planned = epochs
    reporter = Reporter(progress, epochs)
    best, best_state, waited = None, None, 0
    first = True
    threads_before = torch.get_num_threads()
    if threads is not None:
        threads = check_positive_int("threads", threads)
    single = device.type == "cpu" and threads is not None and threads != threads_before
    if single:
        torch.set_num_threads(threads)
    history.threads = torch.get_num_threads() if device.type == "cpu" else 0
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            t0 = time.perf_counter()
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            n = 0
            t_warm = None
            for i, (x, y) in enumerate(reporter.batches(train_loader, epoch)):
                # non_blocking: the copy overlaps with compute when the batch comes from pinned memory.
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                forward = step_model
                if compile:
                    # The compiled model serves the first batch's shape. A batch of another shape (the
                    # epoch's last, smaller one) runs the same weights eagerly: a second compilation (tens
                    # of seconds) or a dynamic-shape graph (slower for every batch) would cost far more
                    # than one eager step per epoch.
                    compiled_shape = compiled_shape or x.shape
                    forward = step_model if x.shape == compiled_shape else model
                out, loss = _forward(forward, x, y, loss_fn, dtype, device, first)
                first = False
                opt.zero_grad(set_to_none=True)  # no memset of the gradients: they are written, not added
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                if sched is not None:
                    sched.step()
                # Running sums on the device: no .item() (a GPU sync) per batch.
                total_loss += loss.detach().float() * len(y)
                correct += (out.detach().argmax(1) == y).sum()
                n += len(y)
                if device.type == "cpu" and epoch == 1 and n_batches and not _cpu_warned:
                    if i == 0:
                        t_warm = time.perf_counter()
                    elif i == min(2, n_batches - 1):
                        _warn_cpu((time.perf_counter() - t_warm) / i, n_batches, epochs)
            if device.type == "cpu" and n_batches == 1 and epoch == 1 and not _cpu_warned:
                _warn_cpu(time.perf_counter() - t0, n_batches, epochs)
            if n == 0:
                raise DLVisionError("the training data is empty")
            train_loss = total_loss.item() / n  # one sync per epoch
            train_acc = correct.item() / n
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_train = time.perf_counter() - t0
            if val_loader is not None:
                ev = evaluate(model, val_loader, loss_fn=loss_fn, precision="fp32" if dtype is None else precision)
                val_loss, val_acc = ev.loss, ev.accuracy
            else:
                val_loss = val_acc = float("nan")
            history.train_loss.append(train_loss)
            history.train_acc.append(train_acc)
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)
            history.seconds.append(time.perf_counter() - t0)
            history.images_per_s.append(n / t_train)

            score = val_acc if monitor == "val_acc" else -val_loss
            if val_loader is not None and (best is None or score > best):
                best, waited = score, 0
                history.best_epoch = epoch
                if early_stopping is not None and restore_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if checkpoint is not None:
                    save_checkpoint(checkpoint, model, opt, epoch=epoch, history=history.as_dict())
            elif val_loader is not None:
                waited += 1
            reporter.epoch_end(history)
            if early_stopping is not None and waited >= early_stopping:
                history.stopped_early = epoch < epochs
                break
    finally:
        if single:
            torch.set_num_threads(threads_before)
    if val_loader is None:
        history.best_epoch = history.epochs
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, opt, epoch=history.epochs, history=history.as_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
