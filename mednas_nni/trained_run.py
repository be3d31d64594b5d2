"""A finished run directory back in memory: the best model with its task, data set and config.

Everything is read as data: JSON, and weights with ``torch.load(weights_only=True)`` (:func:`load_weights`), so a run
directory from elsewhere can never run code; a file that is not what mednas-nni writes is refused with one line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import load_config
from .errors import RunDirError
from .io import RunDir

if TYPE_CHECKING:  # pragma: no cover
    from .config import ExperimentConfig
    from .experiment import RunContext

__all__ = ["load_weights", "load_trained", "load_trained_model"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: expected this file in the run directory, got none") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: expected JSON, got a damaged file ({e})") from None


def load_weights(path: Path) -> dict[str, Any]:
    """A ``state_dict`` from ``path``, read as tensors only (``weights_only=True``: never runs code from a file)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path}: expected this weights file in the run directory, got none") from None
    except Exception as e:  # noqa: BLE001 - pickled objects, a damaged or foreign file: refused, never run
        first = (str(e).splitlines() or [""])[0].split(". ")[0][:100]
        raise RunDirError(f"{path}: expected a state_dict of tensors, got a file torch refuses to load as weights "
                          f"only ({type(e).__name__}: {first}); mednas-nni did not write it, so it was not "
                          "loaded") from None


def load_trained(path: str | Path, ctx: RunContext | None = None) -> Any:
    """The finished run's best model as a :class:`~mednas_nni.contracts.TrainedModel` (loaded once)."""
    import torch

    from .contracts import TrainedModel
    from .experiment import RunContext

    rd = RunDir.open(path)
    for f in (RunDir.BEST_ARCH, RunDir.BEST_WEIGHTS):
        if not (rd / f).is_file():
            raise RunDirError(f"{rd.path}: expected {f} (written when a run finishes), got none; "
                              f"finish the run with 'mednas resume {rd.path}'")
    if ctx is None:
        cfg = load_config(rd / RunDir.CONFIG)
        cfg.run.progress = False
        ctx = RunContext.build(cfg, rd)
    space = ctx.build_space()
    sample = _read_json(rd / RunDir.BEST_ARCH)
    try:
        model = space.freeze(sample)
    except Exception as e:  # noqa: BLE001 - e.g. NNI's SampleMissingError: an architecture of another space
        raise RunDirError(f"{rd / RunDir.BEST_ARCH}: expected an architecture of search space "
                          f"'{ctx.cfg.space.name}' (config.resolved.yaml), got one it cannot build "
                          f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]})") from None
    try:
        model.load_state_dict(torch.load(rd / RunDir.BEST_WEIGHTS, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 - a damaged or foreign weights file
        raise RunDirError(f"{rd / RunDir.BEST_WEIGHTS}: expected the state_dict of best_arch.json, got an "
                          f"incompatible file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    metrics = _read_json(rd / RunDir.METRICS) if (rd / RunDir.METRICS).exists() else {}
    return TrainedModel(model=model.cpu().eval(), task=ctx.task, dataset=ctx.dataset, sample=sample, cfg=ctx.cfg,
                        run_dir=rd.path, metrics=metrics, space=space)


def load_trained_model(path: str | Path) -> tuple[Any, ExperimentConfig, Any]:
    """``(model, cfg, dataset)`` for a finished run: the frozen best architecture with its trained weights."""
    t = load_trained(path)
    return t.model, t.cfg, t.dataset
