"""Entry-point discovery, a simulated third-party plugin, broken plugins and duplicates."""
from __future__ import annotations

import sys
import textwrap

import pytest

from mednas_nni import registry
from mednas_nni.errors import PluginLoadError, PluginNotFoundError


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """An installed third-party distribution with a working and a broken strategy plugin (dist-info on sys.path)."""
    pkg = tmp_path / "acme_nas"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "search.py").write_text(textwrap.dedent('''
        class AcmeSearch:
            """Acme's own search strategy."""
            name = "acme"
    '''))
    (pkg / "broken.py").write_text("raise ImportError('acme needs libfoo')\n")
    dist = tmp_path / "acme_nas-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-nas\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent('''
        [mednas_nni.strategies]
        acme = acme_nas.search:AcmeSearch
        acme_broken = acme_nas.broken:Nothing
        [mednas_nni.datasets]
        medmnist = acme_nas.search:AcmeSearch
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.clear_cache()
    yield
    sys.modules.pop("acme_nas", None)
    sys.modules.pop("acme_nas.search", None)
    registry.clear_cache()


def test_builtins_are_found_through_entry_points():
    names = {(i.kind, i.name) for i in registry.list_plugins()}
    assert {("strategies", "zc_nsga2"), ("search_spaces", "mstf_cell"), ("datasets", "medmnist")} <= names
    info = next(i for i in registry.list_plugins("strategies") if i.name == "zc_nsga2")
    assert info.origin == "mednas-nni" and info.status == "ok" and "NSGA" in info.summary


def test_third_party_plugin_is_discovered_and_broken_one_is_isolated(third_party):
    infos = {i.name: i for i in registry.list_plugins("strategies")}
    assert infos["acme"].status == "ok" and infos["acme"].origin == "acme-nas"
    assert infos["acme"].summary == "Acme's own search strategy."
    assert infos["acme_broken"].status == "failed" and "acme needs libfoo" in infos["acme_broken"].error
    assert infos["zc_nsga2"].status == "ok"                       # others unaffected
    assert registry.get_plugin("strategies", "acme").__name__ == "AcmeSearch"
    with pytest.raises(PluginLoadError, match=r"strategy plugin 'acme_broken' .*from acme-nas.* failed to load: "
                                              r"ImportError: acme needs libfoo"):
        registry.get_plugin("strategies", "acme_broken")


def test_duplicate_names_warn_with_both_origins(third_party):
    with pytest.warns(UserWarning, match=r"dataset plugin 'medmnist' is provided twice: by (acme-nas|mednas-nni) "
                                         r"\(.*\) and by (acme-nas|mednas-nni) .*; using the one from"):
        cls = registry.get_plugin("datasets", "medmnist")
    assert cls.__name__ in ("MedMNISTDataset", "AcmeSearch")


def test_unknown_name_did_you_mean_and_class_passthrough():
    with pytest.raises(PluginNotFoundError, match=r"unknown search space 'mstf'; did you mean 'mstf_cell'\?"):
        registry.get_plugin("search_spaces", "mstf")

    class Mine:
        pass

    assert registry.get_plugin("strategies", Mine) is Mine


def test_register_in_code():
    class Toy:
        """A toy dataset."""

    registry.register("datasets", "toy", Toy)
    try:
        assert registry.get_plugin("dataset", "toy") is Toy
        assert any(i.name == "toy" and i.origin == "<registered>" for i in registry.list_plugins("datasets"))
    finally:
        registry.unregister("datasets", "toy")
