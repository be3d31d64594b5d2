"""Per-epoch checkpoints of a one-shot search: written atomically, read back with ``torch.load(weights_only=True)``.

The one-shot engine (:mod:`mednas_nni.engines.oneshot_engine`) resumes a killed search with Lightning's own resume
(``trainer.fit(..., ckpt_path=...)``), so the epoch counter, the optimiser and scheduler states, α and the supernet
weights all come back, and the search continues from its last finished epoch instead of epoch 0. This module holds the
two pieces around it:

* :class:`AtomicCheckpointIO`: Lightning's ``CheckpointIO`` plugin that writes through
  :func:`mednas_nni.io.atomic_torch_save` (temp file + rename: a kill during the save leaves the previous checkpoint
  intact) and loads with ``weights_only=True`` (tensors and plain Python types only; nothing is unpickled).
  Lightning's checkpoint of our modules holds only such data (``state_dict``, ``optimizer_states``,
  ``lr_schedulers``, ``loops`` and the callbacks' ``state_dict``; we never call ``save_hyperparameters``), which the
  tests assert.
* :class:`EpochCheckpoint` (:func:`last_checkpoint_callback`): keeps exactly one file,
  ``<run dir>/oneshot/last.ckpt``, rewritten after every training epoch.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning import Callback

from ..errors import RunDirError
from ..io import atomic_torch_save

__all__ = ["CHECKPOINT_DIR", "CHECKPOINT_FILE", "AtomicCheckpointIO", "EpochCheckpoint", "last_checkpoint_callback",
           "checkpoint_path", "load_checkpoint", "checkpoint_epoch"]

_logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "oneshot"
CHECKPOINT_FILE = "last.ckpt"


def checkpoint_path(run_dir: Any) -> Path:
    """``<run dir>/oneshot/last.ckpt`` (``run_dir``: a :class:`~mednas_nni.io.RunDir` or a path)."""
    root = Path(getattr(run_dir, "path", run_dir))
    return root / CHECKPOINT_DIR / CHECKPOINT_FILE


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` as plain data (``weights_only=True``); a one-line :class:`RunDirError` if damaged."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path}: expected a one-shot checkpoint, got none") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say which, in one line
        raise RunDirError(f"{path}: expected a one-shot checkpoint (tensors and plain data), got an unreadable file "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


def checkpoint_epoch(path: Path) -> int:
    """Training epochs finished when ``path`` was written (Lightning's ``epoch`` key + 1)."""
    return int(load_checkpoint(path)["epoch"]) + 1


class AtomicCheckpointIO(CheckpointIO):
    """Lightning ``CheckpointIO``: atomic save, ``weights_only=True`` load (see the module doc)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(Path(path), map_location=map_location or "cpu")

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)


class EpochCheckpoint(Callback):
    """Rewrites ``<run dir>/oneshot/last.ckpt`` after every training epoch through ``trainer.save_checkpoint``
    (so with the trainer's :class:`AtomicCheckpointIO`). Put it after every callback whose state must be saved
    (Lightning calls callbacks in list order). Lightning's ``ModelCheckpoint`` is not used: with ``save_top_k=0``
    it writes ``last.ckpt`` only at the end of the fit."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        trainer.save_checkpoint(str(self.path))


def last_checkpoint_callback(run_dir: Any) -> EpochCheckpoint:
    """The :class:`EpochCheckpoint` of ``run_dir`` (``<run dir>/oneshot/last.ckpt``)."""
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return EpochCheckpoint(path)
