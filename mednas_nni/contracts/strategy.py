"""The two strategy families. The core owns everything around them: engines, persistence, resume, outputs.

*Multi-trial* strategies (:class:`MultiTrialStrategy`) are ask/tell objects in the pymoo style: the core asks
:meth:`~MultiTrialStrategy.propose` for a batch of architectures, evaluates every one it has not evaluated before
(on the in-process engine, NNI's local training service, or as nnictl trials), and tells the strategy the results
of the whole batch, in proposal order, with :meth:`~MultiTrialStrategy.observe`. Cache hits are answered from the
run directory's ``archs.jsonl``; invalid samples (``space.is_valid``) are recorded and never evaluated. State goes
through :meth:`~MultiTrialStrategy.state_dict` (JSON data only) at every batch boundary, so a resumed search
re-evaluates nothing. What one trial computes is the strategy's :meth:`~MultiTrialStrategy.trial` spec.

*One-shot* strategies (:class:`OneShotStrategy`) train a supernet and return finalists: ``search(space, task,
data, ctx)``. The core retrains and tests the finalists exactly as for multi-trial searches.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .params import PluginParams

if TYPE_CHECKING:  # pragma: no cover
    from ..experiment import RunContext

__all__ = ["TrialSpec", "TrialResult", "MultiTrialStrategy", "OneShotStrategy"]


@dataclass
class TrialSpec:
    """What one trial computes: ``function(model, sample, ctx, report, **kwargs) -> dict`` (a ``"module:attr"`` path, so
    the function can be imported in an NNI trial process; ``kwargs`` must be JSON data).

    The function trains or scores the frozen ``model`` (the network of the canonical ``sample``) and returns its final metrics; ``report(dict)`` sends an
    intermediate result (e.g. one per epoch) to NNI. The returned dict's ``default`` is what NNI's web UI plots:
    ``default_meaning`` documents it (one meaning per experiment).
    """

    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    default_meaning: str = ""


@dataclass
class TrialResult:
    """The outcome of evaluating one architecture. ``status``: ``ok`` (``metrics`` hold the trial's final dict),
    ``failed`` (``error`` says why), ``invalid`` (pruned by ``space.is_valid``, never evaluated) or ``skipped``
    (not evaluated because the evaluation budget ran out)."""

    sample: dict[str, Any]
    hash: str
    status: Literal["ok", "failed", "invalid", "skipped"]
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class MultiTrialStrategy(abc.ABC):
    """An ask/tell search over the architectures of a search space.

    Subclasses implement :meth:`propose`, :meth:`observe`, :meth:`finalists` and :meth:`trial`, and keep all
    their state in :meth:`state_dict`. Constructors are keyword-only and take ``seed`` (None: the run's seed,
    filled in by the core).
    """

    family: ClassVar[str] = "multi-trial"
    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]]
    #: evaluations at most (None: no limit); the core stops evaluating when it is reached
    max_evaluations: int | None = None

    def setup(self, space: Any, ctx: RunContext, reject: Callable[[dict[str, Any], str], None]) -> None:
        """Called once before the first :meth:`propose` (and before :meth:`load_state_dict` on resume).

        ``space`` is the :class:`~mednas_nni.contracts.SearchSpace` (use its ``label_values``, ``canonicalize``,
        ``is_valid``); ``reject(sample, reason)`` records an invalid sample the strategy drew and discarded itself.
        """
        self.space, self.ctx, self.reject = space, ctx, reject

    @abc.abstractmethod
    def propose(self) -> list[dict[str, Any]] | None:
        """The next batch of architecture samples (e.g. a generation), or None when the search is finished."""

    @abc.abstractmethod
    def observe(self, results: list[TrialResult]) -> None:
        """The results of the last proposed batch, one per sample, in proposal order."""

    @abc.abstractmethod
    def finalists(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Finalists to retrain: dicts with at least ``hash``, ``sample`` and ``chosen_as`` (``records``: every
        record of ``archs.jsonl``)."""

    @abc.abstractmethod
    def trial(self, ctx: RunContext) -> TrialSpec:
        """What one trial computes (scores, or a short training through the task)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (everything needed to continue from the last batch boundary)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def write_outputs(self, ctx: RunContext, records: list[dict[str, Any]],
                      finalists: list[dict[str, Any]]) -> None:
        """Extra outputs of a finished search in ``ctx.run_dir`` (e.g. ``pareto.png``)."""

    def progress_total(self) -> int | None:
        """Evaluations expected in all (for the progress bar), if known."""
        return self.max_evaluations

    def progress_postfix(self) -> dict[str, Any]:
        """A few numbers for the progress bar (best score so far, generation)."""
        return {}


class OneShotStrategy(abc.ABC):
    """A supernet (one-shot) search on NNI's one-shot machinery (Lightning)."""

    family: ClassVar[str] = "one-shot"
    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]]

    @abc.abstractmethod
    def search(self, space: Any, task: Any, data: Any, ctx: RunContext) -> list[dict[str, Any]]:
        """Train the supernet and return the finalists' samples (dicts with ``sample`` and ``chosen_as``)."""
