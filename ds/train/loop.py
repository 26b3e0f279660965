"""`fit`: train a network in place, one checkpoint per epoch that resumes exactly.

SGD with Nesterov momentum, per-step cosine schedule with linear warm-up, label smoothing, no
weight decay on BN and biases, AMP (bf16/fp16) and channels_last on GPU, optional EMA, optional
self-distillation from a teacher; what varies per use (the gate search) comes in as `FitHooks`.
Recovery after removal, set in TrainConfig: annealed or progressive removal (`anneal_end`,
`progressive`; ds.train.anneal, positioned by the step count before every step) and BatchNorm
recalibration on a fresh start (`recalibrate_bn`; ds.train.recalibrate).
The same code runs single-process and under `torchrun` (DDP).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ds import ddp
from ds.distill import distillation_loss
from ds.meta import NetInfo, info

from . import anneal as annealing
from .checkpoint import CHECKPOINT, load_checkpoint, load_weights, save_checkpoint
from .config import TrainConfig, amp_dtype
from .ema import ModelEma
from .evaluate import autocast, evaluate
from .hooks import FitHooks
from .optim import param_groups, warmup_cosine
from .recalibrate import recalibrate_batchnorm
from .resume import check_resume
from .rng import rng_state, seed_everything, set_rng_state

METRICS = "metrics.csv"
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "metrics")


@dataclass
class FitResult:
    metrics: pd.DataFrame
    model: nn.Module                  # the trained model (unwrapped)
    ema: nn.Module | None = None


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint was kept."""


@dataclass
class _Parts:
    """What one run trains with, and what its checkpoints hold besides the weights."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    rows: list
    anneal: annealing.RemovalAnneal | None = None


def fit(model: nn.Module, train_loader, test_loader=None, cfg: TrainConfig | None = None, *,
        out_dir: str | Path | None = None, teacher: nn.Module | None = None, resume: bool = False,
        dist: ddp.DistInfo | None = None, meta: NetInfo | dict | None = None, hooks: FitHooks | None = None,
        extra: dict | None = None, holdout_loader=None) -> FitResult:
    """Train `model` in place; with `out_dir`, write checkpoint.pt and metrics.csv every epoch.

    teacher: enables self-distillation (cfg.distill_alpha * soft CE + rest * CE).
    holdout_loader: evaluated every epoch before test_loader (holdout_loss, holdout_acc): held-out
      training images, to choose settings on without looking at the test set.
    cfg.anneal_end (with anneal_start, progressive, removal_order): the network from ds.apply_pattern
      gets its removed activations back, blended out step by step (ds.train.anneal); a run that ends
      after the anneal returns, and checkpoints, the plain merge-ready network. With stop_after_epoch
      inside the anneal the returned model still holds the blended activations (the checkpoint never does).
    cfg.recalibrate_bn: on a fresh start, BatchNorm statistics recomputed on that many training batches.
    resume: continue from out_dir/checkpoint.pt when there is one (else start at epoch 1; without
      resume an existing checkpoint is an error, never overwritten). The
      checkpoint must come from the same run: `ds.train.resume` lists what may differ; anything
      else raises ResumeMismatch with the differences.
    meta: what the network is (default `ds.meta.info(model)`); saved in and checked against checkpoints.
    hooks: what this use adds (extra optimizers, loss terms, per-step records; see FitHooks).
    extra: stored as is in every checkpoint under "extra" (the CLI keeps its arguments there).
    A loss that turns NaN/inf raises NonFiniteLoss; the checkpoint of the last good epoch stays.
    """
    cfg = cfg or TrainConfig()
    hooks_used = hooks is not None
    hooks = hooks or FitHooks()
    # the device is the data's when the loader holds it there (ds.loaders.DeviceLoader), else the model's
    dist = dist or ddp.DistInfo(device=getattr(train_loader, "device", None) or next(model.parameters()).device)
    meta = (meta if isinstance(meta, NetInfo) else NetInfo.from_dict(meta) if meta else info(model)).as_dict()
    channels_last = cfg.channels_last if cfg.channels_last is not None else dist.device.type == "cuda"
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    if len(train_loader) == 0:
        raise ValueError("the training loader yields no batch: lower the batch size or use more data")
    if not resume and ckpt_path is not None and ckpt_path.is_file():
        raise FileExistsError(f"{ckpt_path} exists and resume=False would overwrite it: pass resume=True to "
                              f"continue it, or remove it / choose another out_dir to start over")

    model, teacher = _to_device(model, dist.device, channels_last), _frozen(teacher, dist.device, channels_last)
    parts = _parts(model, cfg, len(train_loader), dist.device)
    start_epoch = 0
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, RESUME_KEYS)
        check_resume(ckpt_path, ckpt, cfg, meta, len(train_loader), hooks, hooks_used)
        start_epoch = _restore(ckpt, ckpt_path, model, parts, hooks, dist)
        if parts.anneal is not None:
            parts.anneal.set_step((ckpt.get("anneal") or {}).get("step", start_epoch * len(train_loader)))
    else:
        seed_everything(cfg.seed, dist.rank)
        if parts.anneal is not None:
            parts.anneal.set_step(0)
        if cfg.recalibrate_bn:
            recalibrate_batchnorm(model, train_loader, cfg.recalibrate_bn, device=dist.device, amp=cfg.amp)

    net = nn.parallel.DistributedDataParallel(
        model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None) if dist.distributed else model
    if cfg.compile:   # evaluation stays eager: eval-mode BN would only add a second compiled graph
        net = torch.compile(net)

    for epoch in range(start_epoch, cfg.epochs):
        row = _train_epoch(net, model, train_loader, epoch, cfg, parts, hooks, teacher, dist, ckpt_path)
        if parts.anneal is not None:   # evaluated and saved where the next step would start
            parts.anneal.set_step((epoch + 1) * len(train_loader))
        hooks.end_epoch(epoch)
        if dist.distributed:   # every rank evaluates (and rank 0 saves) the same BN statistics
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, 0)
        row.update(_test_metrics(model, parts.ema, holdout_loader, dist.device, cfg.amp, "holdout"))
        row.update(_test_metrics(model, parts.ema, test_loader, dist.device, cfg.amp))
        parts.rows.append(row)
        rngs = _gather_rng(dist)
        if ckpt_path is not None and dist.is_main:
            pd.DataFrame(parts.rows).to_csv(ckpt_path.parent / METRICS, index=False)
            save_checkpoint(_checkpoint(model, parts, hooks, hooks_used, cfg, meta, epoch, rngs,
                                        len(train_loader), extra), ckpt_path)
        if dist.is_main:   # one log line per epoch, progress bars or not
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        ddp.barrier()
        if cfg.stop_after_epoch is not None and epoch + 1 >= cfg.stop_after_epoch:
            break
    return FitResult(pd.DataFrame(parts.rows), model, parts.ema.module if parts.ema else None)


# ---------------------------------------------------------------- setting up

def _to_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _frozen(teacher: nn.Module | None, device: torch.device, channels_last: bool) -> nn.Module | None:
    if teacher is None:
        return None
    for p in teacher.parameters():
        p.requires_grad_(False)
    return _to_device(teacher, device, channels_last).eval()


def _parts(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, device: torch.device) -> _Parts:
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov)
    schedule = warmup_cosine(cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch))
    return _Parts(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
                  torch.amp.GradScaler(device.type, enabled=amp_dtype(cfg.amp, device) == torch.float16),
                  ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None, [],
                  annealing.from_config(model, cfg, steps_per_epoch))


# ---------------------------------------------------------------- one epoch

def _train_epoch(net, model, loader, epoch: int, cfg: TrainConfig, parts: _Parts, hooks: FitHooks,
                 teacher, dist: ddp.DistInfo, ckpt_path: Path | None) -> dict:
    """Train one epoch; the metrics row of its training part."""
    device, dtype = dist.device, amp_dtype(cfg.amp, dist.device)
    stop_at_once = device.type == "cpu" and not dist.distributed   # no synchronization cost to check each step
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)   # step of the first non-finite loss
    seen, last_lr, start = 0, parts.optimizer.param_groups[0]["lr"], time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not (cfg.progress and dist.is_main))
    for step, (x, y) in enumerate(bar):
        if parts.anneal is not None:
            parts.anneal.set_step(epoch * len(loader) + step)
        with autocast(device, dtype):
            logits = net(x)
            loss = _loss(logits, y, x, teacher, cfg)
            extra = hooks.loss()
            if extra is not None:
                loss = loss + extra
        last_lr = _step(loss, model, parts, hooks, cfg)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(-1) == y).sum()
        seen += len(y)
        if stop_at_once and first_bad >= 0:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    loss_total, correct_total, seen_total, bad = ddp.all_reduce_sum(
        [loss_sum.item(), correct.item(), float(seen), float(first_bad.item() >= 0)], device)
    if bad:
        _non_finite(epoch, int(first_bad.item()), len(loader), ckpt_path)
    return {"epoch": epoch + 1, "train_loss": loss_total / seen_total, "train_acc": 100.0 * correct_total / seen_total,
            "lr": last_lr, "seconds": seconds, "images_per_s": seen_total / seconds}


def _loss(logits, y, x, teacher, cfg: TrainConfig) -> torch.Tensor:
    if teacher is None:
        return F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    with torch.no_grad():
        teacher_logits = teacher(x)
    return distillation_loss(logits, teacher_logits, y, cfg.distill_alpha, cfg.distill_temperature,
                             cfg.label_smoothing)


def _step(loss: torch.Tensor, model: nn.Module, parts: _Parts, hooks: FitHooks, cfg: TrainConfig) -> float:
    """Backward and one step of every optimizer; the lr this step used."""
    optimizers = [parts.optimizer] + hooks.optimizers()
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    hooks.before_step()
    if cfg.grad_clip:
        parts.scaler.unscale_(parts.optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    for optimizer in optimizers:
        parts.scaler.step(optimizer)
    parts.scaler.update()
    lr = parts.optimizer.param_groups[0]["lr"]
    parts.scheduler.step()
    if parts.ema is not None:
        parts.ema.update(model)
    hooks.after_step()
    return lr


def _non_finite(epoch: int, step: int, steps: int, ckpt_path: Path | None) -> None:
    where = f"epoch {epoch + 1}, step {step + 1} of {steps}" if step >= 0 else f"epoch {epoch + 1} (on another process)"
    if ckpt_path is None:
        kept = "no checkpoint is written without out_dir"
    elif epoch == 0 or not ckpt_path.is_file():
        kept = f"no checkpoint was written yet ({ckpt_path} holds no good epoch)"
    else:
        kept = f"the last good checkpoint, {ckpt_path} (epoch {epoch}), is kept as the resume point"
    raise NonFiniteLoss(f"the training loss became NaN or infinite at {where}; {kept}. Lower the learning "
                        f"rate, set grad_clip, or check the data, then resume or start over")


def _test_metrics(model, ema: ModelEma | None, test_loader, device, amp: str, name: str = "test") -> dict:
    if test_loader is None:
        return {}
    test = evaluate(model, test_loader, device=device, amp=amp)
    row = {f"{name}_loss": test["loss"], f"{name}_acc": test["acc"]}
    if ema is not None:
        test = evaluate(ema.module, test_loader, device=device, amp=amp)
        row.update({f"ema_{name}_loss": test["loss"], f"ema_{name}_acc": test["acc"]})
    return row


# ---------------------------------------------------------------- checkpoints

def _checkpoint(model, parts: _Parts, hooks: FitHooks, hooks_used: bool, cfg: TrainConfig, meta: dict,
                epoch: int, rngs: list, steps_per_epoch: int, extra: dict | None) -> dict:
    state = {"model": model.state_dict(), "optimizer": parts.optimizer.state_dict(),
             "scheduler": parts.scheduler.state_dict(), "scaler": parts.scaler.state_dict(),
             "ema": parts.ema.module.state_dict() if parts.ema else None, "metrics": list(parts.rows),
             "rng": rngs, "epoch": epoch, "config": asdict(cfg), "meta": meta,
             "steps_per_epoch": steps_per_epoch, "hooks": hooks.key if hooks_used else None, "extra": extra,
             "anneal": parts.anneal.state() if parts.anneal is not None else None}
    if hooks_used:
        state[hooks.key] = {"settings": hooks.settings(), "state": hooks.state_dict()}
    return state


def _restore(ckpt: dict, path: Path, model, parts: _Parts, hooks: FitHooks, dist: ddp.DistInfo) -> int:
    """Load a checkpoint into the run's parts; the epoch to continue from."""
    load_weights(model, ckpt["model"], str(path), ckpt.get("meta"))
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scheduler.load_state_dict(ckpt["scheduler"])
    parts.scaler.load_state_dict(ckpt["scaler"])
    if parts.ema is not None and ckpt.get("ema") is not None:
        parts.ema.module.load_state_dict(ckpt["ema"])
    if ckpt.get("hooks"):
        hooks.load_state_dict(ckpt[ckpt["hooks"]]["state"])
    rng = ckpt["rng"]
    set_rng_state(rng[dist.rank] if len(rng) == dist.world_size else rng[0])
    parts.rows[:] = list(ckpt["metrics"])
    return ckpt["epoch"] + 1


def _gather_rng(dist: ddp.DistInfo) -> list[dict]:
    """RNG states of every process (index = rank), for an exact resume."""
    state = rng_state()
    if not dist.distributed:
        return [state]
    states = [None] * dist.world_size
    torch.distributed.all_gather_object(states, state)
    return states
