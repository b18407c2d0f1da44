"""What a metric provider answers: a value, or a typed reason there is none.

Base layer (like spec.py): the providers (adapters) produce these and the analysis
(pure core) judges them, and neither may import the other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """One number for one query at one time."""

    value: float
    time: dt.datetime


@dataclass(frozen=True)
class NoData:
    """The query ran but gave nothing usable: no series, NaN or ±Inf. Never a pass."""

    reason: str
    time: dt.datetime


@dataclass(frozen=True)
class QueryError:
    """The query could not be answered: provider unreachable, bad PromQL, several series."""

    reason: str
    time: dt.datetime


QueryResult = Measurement | NoData | QueryError
