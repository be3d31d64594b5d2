"""The GeNAS plain-CNN chromosome as plain dicts: labels, candidate values, canonical form, sizes, text.

Method: Miahi, Mirroshandel & Nasr, "Genetic Neural Architecture Search for automatic assessment of human sperm
images", arXiv:1909.09432 (GeNAS). The chromosome (``depth``, ``layer{i}/filters|kernel|stride|pool``,
``head/dropout``) is documented in :mod:`.genas_cnn`, whose space and network are built from these helpers;
they need neither torch nor NNI.
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["POOL_TYPES", "layer_labels", "arch_labels", "make_label_values", "canonicalize", "spatial_sizes",
           "describe_arch", "describe_short"]

_logger = logging.getLogger(__name__)

POOL_TYPES = ("none", "max", "avg")
"""Values a ``layer{i}/pool`` gene may take."""


def layer_labels(i: int) -> List[str]:
    """The gene labels of conv layer ``i`` (0-based), in ``simplify()`` order."""
    return [f"layer{i}/filters", f"layer{i}/kernel", f"layer{i}/stride", f"layer{i}/pool"]


def arch_labels(max_depth: int) -> List[str]:
    """All labels of a space with ``max_depth`` layers, in ``simplify()`` order."""
    out = ["depth"]
    for i in range(max_depth):
        out += layer_labels(i)
    return out + ["head/dropout"]


def make_label_values(max_depth: int, min_depth: int, filters: Sequence[int], kernels: Sequence[int],
                      strides: Sequence[int], pools: Sequence[str], dropouts: Sequence[float]) -> Dict[str, List[Any]]:
    """``{label: values}`` of a space, in ``simplify()`` order."""
    out: Dict[str, List[Any]] = {"depth": list(range(min_depth, max_depth + 1))}
    for i in range(max_depth):
        for label, values in zip(layer_labels(i), (filters, kernels, strides, pools)):
            out[label] = list(values)
    out["head/dropout"] = [float(v) for v in dropouts]
    return out


def _match(values: List[Any], x: Any) -> Any:
    # JSON round trips through NNI's manager (JavaScript) turn 0.0 into 0: map a value back to the space's own
    # object so that equal architectures always serialise (and hash) the same way.
    for v in values:
        if v == x and not isinstance(v, bool):
            return v
    return x


def canonicalize(sample: Dict[str, Any], label_values: Dict[str, List[Any]]) -> Dict[str, Any]:
    """The canonical form of an architecture dict (see :meth:`GeNASCNNSpace.canonicalize`)."""
    depth = int(sample["depth"])
    out: Dict[str, Any] = {}
    for label, values in label_values.items():
        if label.startswith("layer") and int(label[5:label.index("/")]) >= depth:
            out[label] = values[0]
        else:
            out[label] = _match(values, sample[label])
    return out


def _layers(sample: Dict[str, Any]) -> List[Tuple[int, int, int, str]]:
    """``[(filters, kernel, stride, pool), ...]`` of the active layers of a sample."""
    return [(int(sample[f"layer{i}/filters"]), int(sample[f"layer{i}/kernel"]), int(sample[f"layer{i}/stride"]),
             str(sample.get(f"layer{i}/pool", "none"))) for i in range(int(sample["depth"]))]


def spatial_sizes(sample: Dict[str, Any], input_size: int, padding: str = "valid") -> List[int]:
    """Height (= width) of the feature map after each active layer (conv, then its pooling gene).

    The list stops at the first size ``<= 0`` (the layer where the network breaks), so a valid architecture gets
    exactly ``depth`` positive sizes.
    """
    h = int(input_size)
    out: List[int] = []
    for _, k, s, pool in _layers(sample):
        pad = k // 2 if padding == "same" else 0
        h = (h + 2 * pad - k) // s + 1       # PyTorch's conv output size (floor), also right for h < k
        if h > 0 and pool != "none":
            h = h // 2                       # 2x2 pooling, stride 2, no ceil mode
        out.append(h)
        if h <= 0:
            break
    return out


def describe_arch(sample: Dict[str, Any], input_size: Optional[int] = None, padding: str = "valid") -> str:
    """Readable text of an architecture dict, e.g.::

        depth 3
          layer0: conv 5x5 /1 -> 16, max-pool 2x2
          layer1: conv 3x3 /2 -> 32
          layer2: conv 3x3 /1 -> 64
          head: global average -> dropout 0.25 -> linear

    With ``input_size`` each line also shows the feature-map size after the layer.
    """
    sizes = spatial_sizes(sample, input_size, padding) if input_size else []
    lines = [f"depth {int(sample['depth'])}"]
    for i, (f, k, s, pool) in enumerate(_layers(sample)):
        txt = f"  layer{i}: conv {k}x{k} /{s} -> {f}"
        if pool != "none":
            txt += f", {pool}-pool 2x2"
        if i < len(sizes):
            txt += f"  ({sizes[i]}x{sizes[i]})"
        lines.append(txt)
    lines.append(f"  head: global average -> dropout {float(sample['head/dropout']):g} -> linear")
    return "\n".join(lines)


def describe_short(sample: Dict[str, Any]) -> str:
    """One short line, e.g. ``3 conv layers: 5x5/1->16 max-pool, 3x3/2->32, 3x3/1->64; dropout 0.25``."""
    layers = []
    for f, k, s, pool in _layers(sample):
        layers.append(f"{k}x{k}/{s}->{f}" + ("" if pool == "none" else f" {pool}-pool"))
    return f"{len(layers)} conv layers: {', '.join(layers)}; dropout {float(sample['head/dropout']):g}"
