"""``mednas export`` and ``mednas predict`` (filled in by the deployment work)."""
from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    return None
