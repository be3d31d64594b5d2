"""Typed experiment configuration: YAML + dotted overrides -> :class:`ExperimentConfig`.

Sections: ``data``, ``space``, ``strategy`` (each ``{name, params}`` naming a plugin), ``evaluator``
(the retraining recipe), ``export`` (optional, an exporter plugin) and ``run``. Each plugin validates
its own ``params`` with its ``Params`` model, so errors name the full path
(``strategy.params.pop_size``). Relative paths resolve against the YAML's folder (the embedded
default resolves them against the current folder). :func:`load_config` returns a config whose
plugin params are complete (defaults filled in) and whose paths are absolute; that is what is
written to ``config.resolved.yaml``.
"""
from __future__ import annotations

import copy
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, MedNASError, did_you_mean
from .config_training_service import TrainingServiceConfig, check_training_service

__all__ = ["PluginSpec", "EvaluatorConfig", "EngineConfig", "RunConfig", "ExperimentConfig", "load_config", "default_config_path",
           "dump_config", "apply_overrides", "format_validation_error"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PluginSpec(_Section):
    """A plugin by name plus its parameters (validated by the plugin's own ``Params``)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluatorConfig(_Section):
    """How finalists are retrained and compared (defaults: the MedMNIST v2 recipe, fewer epochs).

    MedMNIST v2 trains with Adam lr 1e-3, batch 128, 100 epochs, lr x0.1 at 50 % and 75 %, picks the
    checkpoint with the best val AUC, and normalises with mean 0.5 / std 0.5.
    """

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # fractions of epochs
    gamma: float = Field(0.1, gt=0, le=1)
    augment: bool = False
    # ``val_<metric>`` for any metric the task reports (val_auc, val_balanced_acc, val_dice, ...); None: the task's
    # default (classification: val_auc, segmentation: val_dice). Checked against the task when the run starts.
    select_by: str | None = None
    num_workers: int = Field(0, ge=0)
    max_batches_per_epoch: int | None = Field(None, ge=1)  # for smoke tests; None = full epochs
    bn_batches: int | None = Field(32, ge=0)   # training batches for BatchNorm recalibration before validation
    # "channels_last": the network's 4-D weights in channels-last layout while it is retrained (the convolutions
    # follow). Measured on mstf_cell at C=16 on one CPU thread: 1.3-1.4x faster epochs (depthwise/separable
    # convolutions' backward pass); results are not bit-identical to the default layout, so seeded runs differ.
    memory_format: Literal["contiguous", "channels_last"] = "contiguous"


class EngineConfig(_Section):
    """Where a multi-trial search evaluates its architectures.

    ``sequential``: in this process, one after the other (no web UI; tests, benchmarks, zero-cost scoring).
    ``local``: one NNI trial per architecture on NNI's local training service, with NNI's web UI on ``port``
    (mednas starts the NNI manager on 127.0.0.1 only; ``training_service.manager_host`` opens it, with a warning). Under ``nnictl`` the experiment's own
    config decides instead. One-shot strategies always train in this process.
    """

    kind: Literal["sequential", "local"] = "sequential"
    port: int = Field(8080, ge=1, le=65535)
    trial_concurrency: int = Field(1, ge=1)
    trial_gpu_number: int = Field(0, ge=0)
    use_active_gpu: bool = False
    max_trial_number: int | None = Field(None, ge=1)   # NNI's cap on trials; None: generous (the strategy decides)


class RunConfig(_Section):
    name: str | None = None
    out_dir: Path = Path("runs")
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    progress: bool = True
    deterministic: bool = True


class ExperimentConfig(_Section):
    data: PluginSpec
    task: PluginSpec | None = None     # None: the data set's default task (filled in by load_config)
    space: PluginSpec
    strategy: PluginSpec
    engine: EngineConfig = Field(default_factory=EngineConfig)
    training_service: TrainingServiceConfig = Field(default_factory=TrainingServiceConfig)  # where NNI runs trials
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    export: PluginSpec | None = None
    run: RunConfig = Field(default_factory=RunConfig)

    # Not part of the YAML: where the config came from (for messages) and its folder (for paths).
    source: str = Field("<config>", exclude=True)

    def run_name(self) -> str:
        return self.run.name or f"{self.strategy.name}-{self.data.params.get('flag', self.data.name)}"


_SECTIONS = {"data": "datasets", "task": "tasks", "space": "search_spaces", "strategy": "strategies",
             "export": "exporters"}


def default_config_path() -> Path:
    return Path(str(resources.files("mednas_nni") / "configs" / "default.yaml"))


def format_validation_error(source: str, err: ValidationError, prefix: str = "") -> str:
    """One line ``source: dotted.field: expected X, got Y`` from the first pydantic error."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(e["loc"]))
    if e["type"] == "missing":
        return f"{source}: {loc}: required field is missing"
    msg = e["msg"].replace("Input should be ", "expected ").replace("Value error, ", "")
    return f"{source}: {loc}: {msg}, got {e.get('input')!r}"


def _validation_error(source: str, err: ValidationError, prefix: str, model: type[BaseModel]) -> ConfigError:
    e = err.errors()[0]
    if e["type"] == "extra_forbidden":
        # find the model at that location to list its fields
        sub: Any = model
        for part in e["loc"][:-1]:
            fields = getattr(sub, "model_fields", {})
            if part in fields:
                ann = fields[part].annotation
                args = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
                sub = args[0] if args else ann
        names = sorted(getattr(sub, "model_fields", {}))
        names = [n for n in names if n != "source"]
        loc = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(e["loc"]))
        last = str(e["loc"][-1])
        return ConfigError(f"{source}: {loc}: unknown key{did_you_mean(last, names)} expected one of: {', '.join(names)}")
    return ConfigError(format_validation_error(source, err, prefix))


def _parse_override(item: str, source: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected KEY=VALUE (e.g. strategy.params.pop_size=40), got no '='")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{item}': expected a dotted key like strategy.params.pop_size, got '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{item}': value is not valid YAML ({e.problem})") from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML). Unknown keys are caught by validation,
    except below ``params`` where the plugin's ``Params`` catches them."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = _parse_override(item, source)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None:
                if path[0] not in ExperimentConfig.model_fields or path[0] == "source":
                    raise ConfigError(f"override '{item}': unknown key '{path[0]}'"
                                      f"{did_you_mean(path[0], _public_sections())} expected one of: "
                                      f"{', '.join(_public_sections())}")
                nxt = {}
                node[part] = nxt
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override '{item}': '{'.'.join(path[:i + 1])}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _public_sections() -> list[str]:
    return [k for k in ExperimentConfig.model_fields if k != "source"]


def _is_path_field(annotation: Any) -> bool:
    if annotation is Path:
        return True
    return any(_is_path_field(a) for a in typing.get_args(annotation))


def _override_keys(overrides: list[str] | None) -> set[str]:
    """Dotted keys set on the command line (their relative paths resolve against the working directory)."""
    return {item.split("=", 1)[0].strip() for item in overrides or [] if "=" in item}


def _validate_plugin_params(cfg: ExperimentConfig, base_dir: Path, cli_keys: frozenset[str] = frozenset()) -> None:
    from .registry import get_plugin

    if cfg.task is None:   # the data set says which task fits it
        try:
            data_cls = get_plugin("datasets", cfg.data.name)
        except MedNASError as e:
            raise type(e)(f"{cfg.source}: data.name: {e}") from None
        cfg.task = PluginSpec(name=data_cls.default_task)
    for section, kind in _SECTIONS.items():
        spec: PluginSpec | None = getattr(cfg, section)
        if spec is None:
            continue
        try:
            cls = get_plugin(kind, spec.name)
        except MedNASError as e:
            raise type(e)(f"{cfg.source}: {section}.name: {e}") from None
        params_model = getattr(cls, "Params", None)
        if params_model is None:
            continue
        try:
            params = params_model.model_validate(spec.params)
        except ValidationError as err:
            raise _validation_error(cfg.source, err, f"{section}.params", params_model) from None
        dumped = params.model_dump(mode="python")
        for fname, finfo in params_model.model_fields.items():
            if _is_path_field(finfo.annotation) and dumped.get(fname) is not None:
                p = Path(dumped[fname]).expanduser()
                base = Path.cwd() if f"{section}.params.{fname}" in cli_keys else base_dir
                dumped[fname] = str(p if p.is_absolute() else (base / p).resolve())
        check = getattr(cls, "check_params", None)
        if check is not None:  # plugin-specific checks that need more than field bounds (e.g. a root exists)
            try:
                check(params_model.model_validate(dumped))
            except MedNASError as e:
                raise type(e)(f"{cfg.source}: {section}.params: {e}") from None
        spec.params = dumped


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                validate_plugins: bool = True) -> ExperimentConfig:
    """Load, override and validate a config. ``path=None`` loads the embedded default.

    Raises:
        ConfigError: unreadable YAML, a wrong field, an unknown key or plugin, a bad plugin parameter.
    """
    embedded = path is None
    p = default_config_path() if embedded else Path(path)
    source = "default.yaml (embedded)" if embedded else str(path)
    if not p.is_file():
        raise ConfigError(f"{source}: config file not found" + ("; expected a YAML file" if not p.exists()
                                                                else f"; expected a file, got a folder"))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: expected a UTF-8 YAML text file, got binary data") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with sections {', '.join(_public_sections())}, "
                          f"got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [], source)
    try:
        cfg = ExperimentConfig.model_validate({**raw, "source": source})
    except ValidationError as err:
        raise _validation_error(source, err, "", ExperimentConfig) from None
    # Relative paths written in a YAML file resolve against its folder (NNI's rule, and the examples' ../runs);
    # relative paths typed as KEY=VALUE, and those of the embedded default, against the working directory.
    base_dir = Path.cwd() if embedded else p.resolve().parent
    cli_keys = frozenset(_override_keys(overrides))
    if not cfg.run.out_dir.is_absolute():
        out_base = Path.cwd() if "run.out_dir" in cli_keys else base_dir
        cfg.run.out_dir = (out_base / cfg.run.out_dir.expanduser()).resolve()
    if validate_plugins:
        _validate_plugin_params(cfg, base_dir, cli_keys)
    check_training_service(cfg, base_dir)
    return cfg


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what ``config.resolved.yaml`` holds)."""
    data = cfg.model_dump(mode="json", exclude={"source"})
    return yaml.safe_dump(data, sort_keys=False)
