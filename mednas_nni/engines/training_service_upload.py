"""What travels with a trial to a worker: the trial code folder NNI uploads (``<run>/nni/trial_code``).

NNI's remote service packs the trial code folder into a tarball at every experiment start and unpacks it on every
worker (``nni_node/training_service/v3/compat.js`` uploads it as ``trial_code``; the trial keeper extracts it into
``~/nni-experiments/<id>/environments/<env>/upload/trial_code`` and starts each trial *in* that folder with
``NNI_CODE_DIR`` pointing at it: ``nni_node/common/trial_keeper/{keeper,process}.js``). mednas puts into it:

- ``config.resolved.yaml``: the run's resolved config, without the ``training_service`` section (machine list, key
  paths, passphrases: a trial needs none of it, and secrets must not travel);
- ``mednas_trial_context.json``: marks the folder as this run's (the driver's run directory path, the data mode);
  a trial started in it builds its context from the uploaded config in a worker-local scratch run directory
  (:func:`~mednas_nni.engines.trial.context_for`), never from the driver's path;
- with ``training_service.data: upload``: ``data/<field>``, a copy of each data path of ``data.params`` (hard
  links where the file system allows), and the uploaded config points at it with a path relative to the folder
  (relative paths in a config resolve against its folder). Refused above NNI's own limit for the folder
  (:data:`CODE_DIR_MAX_FILES` files, :data:`CODE_DIR_MAX_BYTES` bytes: ``nni_node/common/tarball.js``), where NNI
  would fail at start with an error in its manager log only.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = ["CODE_DIR_MAX_FILES", "CODE_DIR_MAX_BYTES", "CONTEXT_FILE", "TRIAL_CODE_README", "data_paths",
           "plan_data_upload", "write_trial_code_dir"]

_logger = logging.getLogger(__name__)

#: NNI refuses a trial code folder of more files or bytes than this (nni_node/common/tarball.js: createTarball)
CODE_DIR_MAX_FILES = 2000
CODE_DIR_MAX_BYTES = 300 * 1024 * 1024
#: in the trial code folder: which run it belongs to (read by the trial)
CONTEXT_FILE = "mednas_trial_context.json"
CONFIG_FILE = "config.resolved.yaml"
DATA_FOLDER = "data"
#: files mednas writes into the folder besides the data (README, config, context)
_OWN_FILES = 3

TRIAL_CODE_README = ("NNI uploads this folder to every remote worker as the trial code directory; each trial runs "
                     "in the uploaded copy. It holds the run's resolved config (without the training_service "
                     "section), mednas_trial_context.json and, with training_service.data: upload, the data under "
                     "data/. The architecture travels in the trial's parameters. Kept small on purpose.\n")


def data_paths(cfg: Any) -> dict[str, Path]:
    """``{field: absolute path}`` of every path in ``data.params`` that exists on this machine: the data plugin's
    path-typed parameters (the fields :func:`~mednas_nni.config.load_config` resolves), else absolute strings."""
    from ..config import _is_path_field
    from ..registry import get_plugin

    params = dict(cfg.data.params or {})
    try:
        model = getattr(get_plugin("datasets", cfg.data.name), "Params", None)
    except Exception:       # noqa: BLE001 (an unknown plugin fails elsewhere with its own message)
        model = None
    if model is not None:
        names = [n for n, f in model.model_fields.items() if _is_path_field(f.annotation)]
    else:
        names = [n for n, v in params.items() if isinstance(v, str) and os.path.isabs(v)]
    out = {}
    for name in names:
        value = params.get(name)
        if isinstance(value, (str, Path)) and os.path.isabs(str(value)) and Path(value).exists():
            out[name] = Path(value)
    return out


def _files(path: Path) -> Iterator[tuple[Path, Path]]:
    """``(file, path relative to path)`` of every file under ``path`` (symbolic links followed: NNI would upload
    the link itself, which breaks on the worker)."""
    if path.is_file():
        yield path, Path(path.name)
        return
    for folder, _dirs, names in os.walk(path, followlinks=True):
        for n in sorted(names):
            f = Path(folder) / n
            if f.is_file():
                yield f, f.relative_to(path)


def plan_data_upload(cfg: Any) -> list[tuple[str, Path, list[tuple[Path, Path]]]]:
    """``[(field, source, [(file, relative destination)])]`` for ``training_service.data: upload``; a one-line
    :class:`ConfigError` naming the field when the folder NNI uploads would exceed NNI's limit."""
    plan, n_files, n_bytes = [], _OWN_FILES, 0
    for name, src in data_paths(cfg).items():
        files = list(_files(src))
        size = sum(f.stat().st_size for f, _ in files)
        n_files += len(files)
        n_bytes += size
        if n_files > CODE_DIR_MAX_FILES or n_bytes > CODE_DIR_MAX_BYTES:
            raise ConfigError(
                f"{cfg.source}: training_service.data: 'upload' copies data.params.{name} ({src}: {len(files)} "
                f"files, {size / 2**20:.1f} MB) into the folder NNI uploads to every worker: expected at most "
                f"{CODE_DIR_MAX_FILES} files and {CODE_DIR_MAX_BYTES // 2**20} MB in all (NNI's limit), got "
                f"{n_files} files and {n_bytes / 2**20:.1f} MB; use data: same_path with the data at the same path "
                "on every machine")
        rel = Path(DATA_FOLDER) / name
        plan.append((name, src, [(f, rel / r) for f, r in files]))
    return plan


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Hard link ``src`` to ``dst`` (True), or copy it where the file system refuses (another device: False)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


def _uploaded_config(cfg: Any, rel_data: dict[str, str]) -> str:
    """The config a remote trial loads: no ``training_service`` (it needs none of it; secrets must not travel),
    uploaded data paths relative to the folder."""
    from ..config import dump_config

    raw = yaml.safe_load(dump_config(cfg))
    raw.pop("training_service", None)
    raw["data"]["params"] = {**(raw["data"].get("params") or {}), **rel_data}
    return ("# The run's resolved config as a remote trial loads it (mednas_trial_context.json); relative paths are "
            "relative to this folder.\n" + yaml.safe_dump(raw, sort_keys=False))


def write_trial_code_dir(cfg: Any, run_dir: Path) -> Path:
    """(Re)write ``<run_dir>/nni/trial_code`` (see the module docstring) and return it; the data copy is checked
    against NNI's limit before anything is copied."""
    from ..io import atomic_write_json, atomic_write_text

    mode = cfg.training_service.data
    plan = plan_data_upload(cfg) if mode == "upload" else []
    d = Path(run_dir) / "nni" / "trial_code"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "README.txt", TRIAL_CODE_README)
    shutil.rmtree(d / DATA_FOLDER, ignore_errors=True)      # a resumed run uploads the data as it is now
    linked = copied = 0
    for name, src, files in plan:
        if not src.is_file():
            (d / DATA_FOLDER / name).mkdir(parents=True, exist_ok=True)
        for f, rel in files:
            if _link_or_copy(f, d / rel):
                linked += 1
            else:
                copied += 1
    if plan:
        _logger.info("training_service.data: upload: %d file(s) of %s in %s (%d hard-linked, %d copied)",
                     linked + copied, ", ".join(f"data.params.{n}" for n, _, _ in plan), d / DATA_FOLDER, linked,
                     copied)
    rel_data = {name: str(files[0][1]) if src.is_file() else f"{DATA_FOLDER}/{name}" for name, src, files in plan}
    atomic_write_text(d / CONFIG_FILE, _uploaded_config(cfg, rel_data))
    atomic_write_json(d / CONTEXT_FILE, {"run_dir": str(Path(run_dir)), "config": CONFIG_FILE, "data": mode,
                                         "uploaded": sorted(rel_data)})
    return d
