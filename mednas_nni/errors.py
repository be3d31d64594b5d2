"""One error hierarchy for everything a user can get wrong.

The CLI catches :class:`MedNASError`, prints its one-line message and exits with ``exit_code``
(2 for config/usage problems, 1 for runtime problems). Programming errors stay plain
``ValueError``/``TypeError`` and keep their traceback.

Messages follow *where: what; expected X, got Y [; hint]*.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "MedNASError", "ConfigError", "PluginNotFoundError", "PluginLoadError", "DataError",
    "RunDirError", "SearchError", "ExportError", "OutputError", "TrainingDivergedError",
    "did_you_mean",
]


class MedNASError(Exception):
    """Base class of every user-facing error; ``str(err)`` is the one line the CLI prints."""

    exit_code: int = 1


class ConfigError(MedNASError):
    """A config file, a dotted override or a plugin parameter is wrong."""

    exit_code = 2


class PluginNotFoundError(ConfigError):
    """No installed plugin of that kind has that name."""


class PluginLoadError(MedNASError):
    """An installed plugin failed to import or does not follow its contract."""


class DataError(MedNASError):
    """A data set is missing, corrupt or does not match what was asked for."""

    exit_code = 2


class RunDirError(MedNASError):
    """A folder given as a run directory is not one (or is damaged)."""

    exit_code = 2


class SearchError(MedNASError):
    """The search could not go on (for example every architecture failed)."""


class TrainingDivergedError(SearchError):
    """A network's training diverged (a NaN/inf or exploding loss); recorded, and the run goes on without it."""


class ExportError(MedNASError):
    """Exporting or checking a model failed."""


class OutputError(MedNASError):
    """A file or folder could not be written (disk full, read-only file system, permissions).

    The work written before it is kept: the CLI adds how to continue (``mednas resume RUN_DIR``) when a run
    directory exists.
    """

    resumable = True


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""`` (MONAI's ``look_up_option`` style)."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if str(c).replace("-", "_").lower() == str(name).replace("-", "_").lower()]
    return f"; did you mean '{close[0]}'?" if close else ""
