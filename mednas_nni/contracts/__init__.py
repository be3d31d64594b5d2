"""The contracts every plugin follows: one module, one abstract class per plugin kind.

======================  ==========================  =============================================================
kind (entry-point group) contract                    the one method a new plugin must implement
======================  ==========================  =============================================================
``mednas_nni.datasets``  :class:`DatasetPlugin`      ``dataset(split, augment)`` (plus ``info`` / ``arrays``)
``mednas_nni.tasks``     :class:`Task`               ``evaluate(model, loader, device)`` (plus loss and baseline)
``mednas_nni.search_spaces`` :class:`SearchSpace`    an NNI ``ModelSpace`` built as ``Cls(spatial_dims=, in_channels=,
                                                     out_channels=, image_size=, **params)``; hooks are optional
``mednas_nni.strategies`` :class:`MultiTrialStrategy` ``propose()`` / ``observe(results)`` (ask/tell)
                         :class:`OneShotStrategy`    ``search(space, task, data, ctx)``
``mednas_nni.exporters`` :class:`ExporterPlugin`     ``export(trained, out_dir)``
======================  ==========================  =============================================================

Every plugin class has a ``name`` (== its entry-point name) and a pydantic ``Params`` model (``extra='forbid'``) that
validates the ``params`` of its config section.
"""
from .dataset import DatasetInfo, DatasetPlugin
from .exporter import ExporterPlugin, TrainedModel
from .params import NoParams, PluginParams
from .search_space import SearchSpace
from .strategy import MultiTrialStrategy, OneShotStrategy, TrialResult, TrialSpec
from .task import Task

__all__ = ["PluginParams", "NoParams", "DatasetInfo", "DatasetPlugin", "Task", "SearchSpace", "MultiTrialStrategy",
           "OneShotStrategy", "TrialResult", "TrialSpec", "ExporterPlugin", "TrainedModel"]
