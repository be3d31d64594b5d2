"""Genetic operators of GeNAS-WF over the plain-CNN chromosome of :mod:`.genas_cnn`.

Method: Miahi, Mirroshandel & Nasr, "Genetic Neural Architecture Search for automatic assessment of human sperm
images", arXiv:1909.09432 (GeNAS). The paper fixes a genetic algorithm over plain CNNs; the operators below are
**our reading** ("GeNAS (mednas reading)"). They live next to the space because they know its labels
(``depth``, ``layer{i}/{gene}``, head genes); :meth:`GeNASCNNSpace.crossover
<mednas_nni.search_spaces.genas_cnn.GeNASCNNSpace.crossover>` and ``.mutate`` call them with the space's
``label_values()``.

* **Crossover**: one-point crossover over the *layer list*. With parents' layer lists ``A`` (depth ``dA``) and
  ``B`` (``dB``) and a cut ``c`` in ``1 .. max(dA, dB) - 1``, the children are ``A[:c] + B[c:]`` and
  ``B[:c] + A[c:]`` (a layer = its filters/kernel/stride/pool genes, moved together). Their depths stay within
  ``[min(dA, dB), max(dA, dB)]``, hence within the space. Head genes come from the child's first parent.
* **Mutation**: each gene (depth, every active layer gene, head genes) is redrawn with probability ``prob`` (to a
  different value). Layers added by a depth mutation get random genes.

NOTE: the order of the ``rng`` calls is part of the seeded search results (golden files record them): change
these functions only together with the golden fixtures.
"""
import logging
import random
from typing import Any, Dict, List, Tuple

__all__ = ["one_point_crossover", "mutate"]

_logger = logging.getLogger(__name__)


def _layer_keys(label_values: Dict[str, List[Any]]) -> Tuple[int, List[str]]:
    """``(max_depth, gene names per layer)`` from labels ``layer{i}/{gene}``."""
    idx = sorted({int(k[5:k.index("/")]) for k in label_values if k.startswith("layer") and "/" in k})
    genes = [k.split("/", 1)[1] for k in label_values if k.startswith("layer0/")]
    return (idx[-1] + 1 if idx else 0), genes


def _get_layers(sample: Dict[str, Any], genes: List[str]) -> List[Dict[str, Any]]:
    """The active layers of ``sample`` as ``[{gene: value}, ...]`` (``depth`` of them)."""
    return [{g: sample[f"layer{i}/{g}"] for g in genes} for i in range(int(sample["depth"]))]


def _set_layers(base: Dict[str, Any], layers: List[Dict[str, Any]], label_values: Dict[str, List[Any]]
                ) -> Dict[str, Any]:
    """A canonical sample: ``base``'s non-layer genes, ``layers`` as the active layers, the rest reset."""
    out = {k: (v[0] if k.startswith("layer") else base[k]) for k, v in label_values.items()}
    out["depth"] = len(layers)
    for i, layer in enumerate(layers):
        for g, v in layer.items():
            out[f"layer{i}/{g}"] = v
    return out


def one_point_crossover(a: Dict[str, Any], b: Dict[str, Any], label_values: Dict[str, List[Any]],
                        rng: random.Random) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """One-point crossover over the layer lists (see the module doc); returns two canonical children.

    Args:
        a: first parent (a canonical sample of the space).
        b: second parent.
        label_values: ``{label: candidate values}`` of the space, in ``simplify()`` order.
        rng: the random source (one ``randint`` call; none when neither parent has 2 layers).

    Returns:
        ``(A[:c] + B[c:], B[:c] + A[c:])``; copies of the parents when neither has 2 layers.
    """
    _, genes = _layer_keys(label_values)
    la, lb = _get_layers(a, genes), _get_layers(b, genes)
    longest = max(len(la), len(lb))
    if longest < 2:
        return dict(a), dict(b)
    c = rng.randint(1, longest - 1)
    return (_set_layers(a, la[:c] + lb[c:], label_values), _set_layers(b, lb[:c] + la[c:], label_values))


def mutate(sample: Dict[str, Any], label_values: Dict[str, List[Any]], prob: float, rng: random.Random
           ) -> Dict[str, Any]:
    """Per-gene mutation: each active gene is redrawn (to a different value) with probability ``prob``.

    Args:
        sample: a sample of the space.
        label_values: ``{label: candidate values}`` of the space, in ``simplify()`` order.
        prob: probability of redrawing each gene.
        rng: the random source.

    Returns:
        A canonical sample (genes of layers beyond ``depth`` reset to their first value).
    """
    _, genes = _layer_keys(label_values)

    def redraw(key: str, current: Any) -> Any:
        others = [v for v in label_values[key] if v != current]
        return rng.choice(others) if others else current

    layers = _get_layers(sample, genes)
    out = dict(sample)
    if "depth" in label_values and rng.random() < prob:
        depth = redraw("depth", int(sample["depth"]))
        while len(layers) < depth:    # new layers get random genes
            i = len(layers)
            layers.append({g: rng.choice(label_values[f"layer{i}/{g}"]) for g in genes})
        layers = layers[:depth]
    for i, layer in enumerate(layers):
        for g in genes:
            if rng.random() < prob:
                layer[g] = redraw(f"layer{i}/{g}", layer[g])
    for k in label_values:
        if k != "depth" and not k.startswith("layer") and rng.random() < prob:
            out[k] = redraw(k, sample[k])
    return _set_layers(out, layers, label_values)
