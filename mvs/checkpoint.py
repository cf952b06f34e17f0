"""Checkpoints: weights plus the model configuration, loadable with ``weights_only=True``.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts), so loading never
unpickles code::

    {"format": "mvs-checkpoint/1", "model_config": {...}, "state_dict": {...},
     "meta": {...}, "training_state": {...} (optional: optimiser, scheduler, epoch)}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from mvs.errors import MVSInputError

FORMAT = "mvs-checkpoint/1"
# The file name inside a checkpoint folder (one Ray Train checkpoint per epoch).
CHECKPOINT_FILE = "model.pt"
# The checkpoint shipped with the package: the default of every command.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default.pt"


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    model_config: Any,
    meta: dict | None = None,
    training_state: dict | None = None,
    half: bool = False,
) -> None:
    """Write a checkpoint. ``half`` stores floating weights as float16 (shipping size)."""
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "model_config": dataclasses.asdict(model_config),
        "state_dict": state,
        "meta": meta or {},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict safely (``weights_only=True``) and check its format.

    ``path`` may also be a checkpoint folder written by the Ray Train job (it holds
    ``model.pt``), so ``mvs reconstruct --checkpoint`` takes either.
    """
    path = Path(path)
    if path.is_dir() and (path / CHECKPOINT_FILE).is_file():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise MVSInputError("checkpoint not found", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise MVSInputError(f"not a readable checkpoint ({type(error).__name__}: {error})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MVSInputError(f"not an mvs checkpoint (expected format {FORMAT!r})", path)
    return payload


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """Build the network a checkpoint describes and load its weights (float32).

    Returns:
        (model in eval mode on ``device``, payload dict).
    """
    from mvs.models import CascadeMVSNet, ModelConfig

    payload = read_checkpoint(path or DEFAULT_CHECKPOINT)
    config = ModelConfig(**payload["model_config"])
    model = CascadeMVSNet(config)
    load_weights(model, payload)
    return model.to(device).eval(), payload


def load_weights(model: torch.nn.Module, payload: dict) -> None:
    """Load a checkpoint payload's weights into ``model`` (float16 shipped weights become float32)."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    _unwrap(model).load_state_dict(state)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
