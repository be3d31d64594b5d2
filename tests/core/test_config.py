"""Config loading: overrides, validation, path resolution and the one-line errors users see."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mednas_nni.config import dump_config, load_config
from mednas_nni.errors import ConfigError, PluginNotFoundError


def write(tmp_path: Path, data, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def base(root: str | None = None) -> dict:
    d = {"data": {"name": "medmnist", "params": {"flag": "breastmnist"}},
         "space": {"name": "mstf_cell", "params": {"num_blocks": 1, "num_nodes": 2, "channels": 8}},
         "strategy": {"name": "zc_nsga2", "params": {"pop_size": 4, "generations": 1}},
         "run": {"out_dir": "out"}}
    if root:
        d["data"]["params"]["root"] = root
    return d


def test_embedded_default_loads_and_fills_defaults():
    cfg = load_config()
    assert cfg.data.name == "medmnist" and cfg.strategy.name == "zc_nsga2"
    assert cfg.strategy.params["objectives"] == ["jacob_cov:max", "flops:min"]
    assert "crossover_prob" in cfg.strategy.params          # plugin defaults filled in
    assert cfg.run.out_dir == (Path.cwd() / "runs").resolve()


def test_overrides_are_typed_and_validated(tmp_path):
    cfg = load_config(write(tmp_path, base()), ["strategy.params.pop_size=40", "run.seed=7",
                                                 "strategy.params.algorithm=moead"])
    assert cfg.strategy.params["pop_size"] == 40 and cfg.run.seed == 7
    assert cfg.strategy.params["algorithm"] == "moead"


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path, medmnist_root):
    sub = tmp_path / "configs"
    sub.mkdir()
    import shutil

    (tmp_path / "data").mkdir()
    shutil.copy(medmnist_root / "retinamnist.npz", tmp_path / "data")
    d = base("../data")
    d["data"]["params"]["flag"] = "retinamnist"
    cfg = load_config(write(sub, d))
    assert Path(cfg.data.params["root"]) == (tmp_path / "data").resolve()
    assert cfg.run.out_dir == (sub / "out").resolve()
    # the resolved YAML round-trips to the same config
    again = load_config(write(tmp_path, dump_config(cfg), "resolved.yaml"))
    assert again.model_dump() == cfg.model_dump()


@pytest.mark.parametrize("text, match", [
    ("data: [1, 2\n", r"cfg\.yaml: invalid YAML at line \d+"),
    ("- just\n- a list\n", r"expected a mapping with sections data, task, space, strategy, engine"),
    ("data: {name: medmnist}\n", r"space: required field is missing"),
])
def test_bad_yaml_gives_one_line(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_unknown_plugin_has_did_you_mean(tmp_path):
    d = base()
    d["strategy"]["name"] = "zc-nsga2"
    with pytest.raises(PluginNotFoundError, match=r"strategy\.name: unknown strategy 'zc-nsga2'; did you mean "
                                                   r"'zc_nsga2'\? installed: .*zc_nsga2"):
        load_config(write(tmp_path, d))


def test_bad_param_value_names_field_expected_and_got(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg\.yaml: strategy\.params\.pop_size: expected greater than or "
                                          r"equal to 2, got 0"):
        load_config(write(tmp_path, base()), ["strategy.params.pop_size=0"])


def test_unknown_param_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"strategy\.params\.pop_sise: unknown key; did you mean 'pop_size'\? "
                                          r"expected one of: .*generations"):
        load_config(write(tmp_path, base()), ["strategy.params.pop_sise=4"])


def test_unknown_override_section(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'strategi\.params\.x=1': unknown key 'strategi'; "
                                          r"did you mean 'strategy'\?"):
        load_config(write(tmp_path, base()), ["strategi.params.x=1"])
    with pytest.raises(ConfigError, match=r"run\.sed: unknown key; did you mean 'seed'\?"):
        load_config(write(tmp_path, base()), ["run.sed=1"])
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE"):
        load_config(write(tmp_path, base()), ["run.seed"])


def test_missing_data_root_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.params: root: expected an existing folder, got .*nowhere"):
        load_config(write(tmp_path, base(str(tmp_path / "nowhere"))))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"root: expected breastmnist\.npz in .*empty, got no such file"):
        load_config(write(tmp_path, base(str(tmp_path / "empty"))))
    d = base()
    d["data"]["params"]["flag"] = "pathmnist"       # not bundled: needs a root
    with pytest.raises(ConfigError, match=r"only breastmnist at size 28 is bundled"):
        load_config(write(tmp_path, d))


def test_bad_flag_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.params\.flag: .*did you mean 'breastmnist'"):
        load_config(write(tmp_path, base()), ["data.params.flag=breastmnis"])


def test_strategy_objective_validation(tmp_path):
    with pytest.raises(ConfigError, match=r"strategy\.params\.objectives: .*a proxy name"):
        load_config(write(tmp_path, base()), ["strategy.params.objectives=[jacob:max, flops:min]"])
    with pytest.raises(ConfigError, match=r"at least 2 objectives"):
        load_config(write(tmp_path, base()), ["strategy.params.objectives=[flops:min]"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
