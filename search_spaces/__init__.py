"""Search spaces shipped with mednas-nni (installed as ``mednas_nni.search_spaces``)."""
