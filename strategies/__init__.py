"""Search strategies shipped with mednas-nni (installed as ``mednas_nni.strategies``)."""
