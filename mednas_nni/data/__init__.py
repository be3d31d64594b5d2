"""Dataset plugins and MONAI transform pipelines."""
