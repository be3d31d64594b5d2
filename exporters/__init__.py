"""Exporters shipped with mednas-nni (installed as ``mednas_nni.exporters``)."""
