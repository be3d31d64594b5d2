"""Constructor arguments shared by every built-in search space (MONAI vocabulary).

Spaces are built by the core as ``Cls(spatial_dims=, in_channels=, out_channels=, image_size=, **params)``
(:class:`mednas_nni.contracts.SearchSpace`). ``num_classes`` was the name of ``out_channels`` before Core v2; it is
still accepted, with a ``DeprecationWarning``.
"""
import logging
import warnings
from typing import Optional

__all__ = ["check_spatial_dims", "resolve_out_channels", "check_image_size"]

_logger = logging.getLogger(__name__)


def check_spatial_dims(space: str, spatial_dims: int) -> None:
    """Only 2-D spaces exist today: a one-line ValueError for anything else."""
    if spatial_dims != 2:
        raise ValueError(f"{space}: spatial_dims: expected 2 (2-D images only), got {spatial_dims!r}")


def resolve_out_channels(space: str, out_channels: int, num_classes: Optional[int], warn: bool = True) -> int:
    """``out_channels``, or the deprecated ``num_classes`` when it is given (it wins, as the caller asked for it).

    NNI records every ``__init__`` argument (defaults included) and passes them all to the frozen network, so the
    frozen network resolves the same pair again, with ``warn=False``.
    """
    if num_classes is None:
        return out_channels
    if warn:
        warnings.warn(f"{space}: num_classes= is deprecated since 0.2 and will be removed in 0.3; "
                      "use out_channels=", DeprecationWarning, stacklevel=3)
    return num_classes


def check_image_size(space: str, image_size: Optional[int]) -> None:
    """``image_size`` is None (unknown) or an int >= 1."""
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)
                                   or image_size < 1):
        raise ValueError(f"{space}: image_size: expected None or an int >= 1, got {image_size!r}")
