"""The training core: plain PyTorch, no Ray.

``mvs train`` runs :func:`train` in one process; the Ray Train job calls the same
building blocks (:func:`build_datasets`, :func:`build_model`, :func:`build_optimizer`,
:func:`train_one_epoch`, :func:`validate`) inside each worker.

A run folder holds ``config.yaml`` (the exact configuration), ``metrics.jsonl`` (one
line per epoch), ``last.pt`` (resumable: model, optimiser, scheduler, epoch) and
``best.pt`` (best validation accuracy). Re-running with the same ``out`` resumes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mvs.checkpoint import load_weights, read_checkpoint, save_checkpoint
from mvs.config import from_dict, save_config, to_dict
from mvs.data.dataset import MVSDataset, SampleConfig, load_groups, split_groups
from mvs.models import CascadeMVSNet, ModelConfig
from mvs.models.loss import cascade_loss, depth_metrics


@dataclass
class DataConfig:
    train: str = "data/synth_train"  # DTU training layout, a scene folder or a folder of scenes
    # When `train` does not exist yet, generate this many synthetic scans there first
    # (DTU training layout, all lightings), so training needs no download.
    synthetic_scenes: int = 0
    synthetic_views: int = 49
    synthetic_size: tuple[int, int] = (640, 512)
    synthetic_lights: int = 7
    synthetic_seed: int = 0
    validation_fraction: float = 0.1
    num_views: int = 5
    max_dim: int | None = None
    crop: tuple[int, int] | None = (320, 256)  # random crop when training, centre crop for validation
    source_pool: int = 10
    workers: int = 0
    # More training folders (any layout `train` accepts, e.g. the same kind of scans
    # rendered at another image size). Each is split into training and validation like
    # `train`, so every source keeps its own held-out scans.
    extra_train: list[str] = field(default_factory=list)
    # Off: no colour jitter, fixed lighting, centre crop and fixed sources, in file order.
    # Reproducibility checks (e.g. DDP vs one worker) need both off.
    augment: bool = True
    shuffle: bool = True


@dataclass
class OptimConfig:
    epochs: int = 16
    batch_size: int = 2
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0
    amp: bool = True  # mixed precision on GPU (ignored on CPU)
    steps_per_epoch: int | None = None  # cap an epoch (None: one pass over the data)
    validation_samples: int | None = 64  # cap validation cost (None: all)
    # BatchNorm normalises with its running statistics while training (its affine
    # parameters still learn). For batch-1 fine-tuning, and for data-parallel runs on
    # CPU, where SyncBatchNorm does not exist and per-worker batch statistics would
    # otherwise make N workers x batch B differ from one worker x batch N*B.
    freeze_batchnorm: bool = False


@dataclass
class TrainConfig:
    out: str = "outputs/train"
    seed: int = 0
    device: str = "auto"  # auto: cuda if available
    # Start from these weights (a checkpoint file or folder) instead of a random
    # initialisation; the network's configuration is taken from that checkpoint.
    # Ignored when the run folder already holds last.pt (resuming wins).
    init_from: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        for name in ("synthetic_size", "crop"):
            value = getattr(self.data, name)
            if value is not None:
                setattr(self.data, name, tuple(value))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def ensure_training_data(config: DataConfig, progress: bool = True) -> Path:
    """The training data folder, generating synthetic scans into it when asked and missing."""
    path = Path(config.train)
    if path.is_dir() and any(path.iterdir()):
        return path
    if config.synthetic_scenes <= 0:
        from mvs.errors import MVSInputError

        raise MVSInputError(
            "training data not found; point data.train at a DTU training layout or scene "
            "folder, or set data.synthetic_scenes to generate synthetic scans", path
        )
    from mvs.data.synthetic import SynthConfig, generate_dataset

    width, height = config.synthetic_size
    synth = SynthConfig(views=config.synthetic_views, width=width, height=height, lights=config.synthetic_lights)
    generate_dataset(path, config.synthetic_scenes, synth, config.synthetic_seed, layout="train", progress=progress)
    return path


def build_datasets(config: TrainConfig, multiple: int = CascadeMVSNet.SIZE_MULTIPLE) -> tuple[MVSDataset, MVSDataset | None]:
    data = config.data
    train_groups, val_groups = split_groups(load_groups(ensure_training_data(data)), data.validation_fraction)
    for extra in data.extra_train:
        extra_train, extra_val = split_groups(load_groups(extra), data.validation_fraction)
        train_groups, val_groups = train_groups + extra_train, val_groups + extra_val
    common = dict(num_views=data.num_views, max_dim=data.max_dim, crop=data.crop,
                  source_pool=data.source_pool, multiple=multiple)
    train_set = MVSDataset(train_groups, SampleConfig(augment=data.augment, **common), seed=config.seed)
    val_set = MVSDataset(val_groups, SampleConfig(augment=False, **common), seed=config.seed) if val_groups else None
    limit = config.optim.validation_samples
    if val_set is not None and limit is not None and 0 < limit < len(val_set):
        # Spread the capped validation over every held-out scan (and every extra folder)
        # rather than the first views of the first one.
        keep = np.unique(np.linspace(0, len(val_set) - 1, limit).round().astype(int))
        val_set.items = [val_set.items[i] for i in keep]
    return train_set, val_set


def build_model(config: TrainConfig) -> CascadeMVSNet:
    torch.manual_seed(config.seed)
    return CascadeMVSNet(config.model)


def build_optimizer(model: torch.nn.Module, config: TrainConfig, steps_per_epoch: int):
    """AdamW (or SGD) with linear warm-up then cosine decay over the whole run (stepped per batch)."""
    optim = config.optim
    if optim.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    elif optim.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=0.9, weight_decay=optim.weight_decay)
    else:
        raise ValueError(f"optim.optimizer must be 'adamw' or 'sgd', got {optim.optimizer!r}")
    total = max(1, optim.epochs * steps_per_epoch)
    warmup = min(optim.warmup_steps, total // 10 + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


def set_training_mode(model: torch.nn.Module, config: TrainConfig) -> None:
    """``model.train()``, keeping BatchNorm layers in eval mode when ``freeze_batchnorm``."""
    model.train()
    if config.optim.freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def restore_training_state(payload: dict, model: torch.nn.Module, optimizer, scheduler) -> tuple[int, float]:
    """Load a resumable checkpoint's weights and optimiser/scheduler state.

    Returns:
        (first epoch still to run, best selection metric so far).
    """
    from mvs.checkpoint import _unwrap

    _unwrap(model).load_state_dict(payload["state_dict"])
    state = payload["training_state"]
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"] + 1, state["best_metric"]


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _forward(model, batch):
    return model(batch["images"], batch["intrinsics"], batch["extrinsics"], batch["depth_min"], batch["depth_max"])


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: TrainConfig,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = False,
    description: str = "train",
) -> dict[str, float]:
    """One pass (or ``steps_per_epoch`` batches) of training. Returns averaged metrics."""
    set_training_mode(model, config)
    model_config = _model_config(model)
    use_amp = config.optim.amp and device.type == "cuda"
    limit = config.optim.steps_per_epoch or len(loader)
    sums: dict[str, float] = {}
    samples, steps = 0, 0
    start = time.perf_counter()
    bar = tqdm(total=min(limit, len(loader)), desc=description, unit="batch", disable=not progress)
    for batch in loader:
        if steps >= limit:
            break
        batch = _to(batch, device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = _forward(model, batch)
        loss, terms = cascade_loss(outputs, batch["depth"], batch["depth_min"], batch["depth_max"], model_config, batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and use_amp:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            optimizer.step()
        scheduler.step()
        metrics = depth_metrics(outputs["depth"].detach().float(), batch["depth"], batch["depth_min"], batch["depth_max"], model_config, batch["mask"])
        for key, value in {**terms, **metrics}.items():
            if np.isfinite(value):
                sums[key] = sums.get(key, 0.0) + value
        samples += batch["images"].shape[0]
        steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{terms['loss']:.3f}", mae=f"{metrics.get('mae', float('nan')):.3g}")
    bar.close()
    elapsed = time.perf_counter() - start
    result = {f"train_{k}": v / max(steps, 1) for k, v in sums.items()}
    result.update(samples_per_second=samples / max(elapsed, 1e-9), lr=optimizer.param_groups[0]["lr"], steps=steps)
    return result


@torch.no_grad()
def validate(
    model: torch.nn.Module, loader: DataLoader, config: TrainConfig, device: torch.device, progress: bool = False
) -> dict[str, float]:
    """Loss and depth accuracy on the validation set (pixel-weighted means)."""
    model.eval()
    model_config = _model_config(model)
    use_amp = config.optim.amp and device.type == "cuda"
    limit = config.optim.validation_samples
    sums: dict[str, float] = {}
    count, seen = 0, 0
    for batch in tqdm(loader, desc="validate", unit="batch", disable=not progress):
        if limit is not None and seen >= limit:
            break
        batch = _to(batch, device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = _forward(model, batch)
        _, terms = cascade_loss(outputs, batch["depth"], batch["depth_min"], batch["depth_max"], model_config, batch["mask"])
        metrics = depth_metrics(outputs["depth"].float(), batch["depth"], batch["depth_min"], batch["depth_max"], model_config, batch["mask"])
        for key, value in {**terms, **metrics}.items():
            if np.isfinite(value):
                sums[key] = sums.get(key, 0.0) + value
        count += 1
        seen += batch["images"].shape[0]
    return {f"val_{k}": v / max(count, 1) for k, v in sums.items()}


def _model_config(model: torch.nn.Module) -> ModelConfig:
    from mvs.checkpoint import _unwrap

    return _unwrap(model).config


def selection_metric(metrics: dict[str, float]) -> float:
    """Higher is better: validation fraction within 2 scene units, else negative loss."""
    for key in ("val_acc_2", "train_acc_2"):
        if key in metrics:
            return metrics[key]
    return -metrics.get("val_loss", metrics.get("train_loss", float("inf")))


def train(config: TrainConfig, progress: bool = True, on_epoch=None) -> dict:
    """Train in this process, writing a resumable run folder at ``config.out``.

    Args:
        on_epoch: optional callback ``f(epoch, metrics)`` after each epoch.

    Returns:
        the last epoch's metrics plus ``best_metric`` and ``epochs_run``.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    last_path = out / "last.pt"
    initial = read_checkpoint(config.init_from) if config.init_from and not last_path.is_file() else None
    if initial is not None:
        config.model = from_dict(ModelConfig, initial["model_config"])
    save_config(config, out / "config.yaml")
    device = resolve_device(config.device)
    train_set, val_set = build_datasets(config)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.optim.batch_size, shuffle=config.data.shuffle, drop_last=True,
                        num_workers=config.data.workers, generator=generator, persistent_workers=config.data.workers > 0)
    val_loader = DataLoader(val_set, batch_size=1, shuffle=False, num_workers=config.data.workers) if val_set else None
    if len(loader) == 0:
        raise ValueError(f"{len(train_set)} training samples is fewer than one batch of {config.optim.batch_size}")
    steps = min(len(loader), config.optim.steps_per_epoch or len(loader))
    model = build_model(config).to(device)
    optimizer, scheduler = build_optimizer(model, config, steps)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and config.optim.amp else None

    start_epoch, best = 0, -float("inf")
    if initial is not None:
        load_weights(model, initial)
        if progress:
            print(f"starting from the weights of {config.init_from}")
    if last_path.is_file():
        payload = read_checkpoint(last_path, map_location=device)
        start_epoch, best = restore_training_state(payload, model, optimizer, scheduler)
        if progress:
            print(f"resuming {out} from epoch {start_epoch}")

    metrics: dict = {}
    for epoch in range(start_epoch, config.optim.epochs):
        train_set.set_epoch(epoch)
        metrics = train_one_epoch(model, loader, optimizer, scheduler, config, device, scaler, progress,
                                  description=f"epoch {epoch + 1}/{config.optim.epochs}")
        if val_loader is not None:
            metrics.update(validate(model, val_loader, config, device, progress=False))
        metrics["epoch"] = epoch
        score = selection_metric(metrics)
        meta = {"epoch": epoch, "metrics": metrics, "train_config": to_dict(config)}
        if score > best:
            best = score
            save_checkpoint(out / "best.pt", model, config.model, meta=meta)
        training_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "epoch": epoch, "best_metric": best}
        save_checkpoint(last_path, model, config.model, meta=meta, training_state=training_state)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if progress:
            shown = {k: round(v, 4) for k, v in metrics.items() if k in (
                "train_loss", "val_loss", "val_mae", "val_acc_2", "val_acc_4", "samples_per_second")}
            print(f"epoch {epoch + 1}: {shown}")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return {**metrics, "best_metric": best, "epochs_run": config.optim.epochs - start_epoch}
