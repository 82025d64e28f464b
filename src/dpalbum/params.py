"""Typed, range-checked parameter groups: pydantic dataclasses that refuse unknown keys.

Kedro builds a node's typed ``params:`` input with ``cls(**values)``; a pydantic dataclass
checks every value against its annotation there (``ngram: PositiveInt``), coerces only what is
lossless ("3" -> 3, 2 -> 2.0; never 2.5 -> 2), builds nested groups from their dicts and names
the offending key (``repetition.ngram: Input should be greater than or equal to 1``), before the
node runs. A run of one pipeline validates only that pipeline's groups (Kedro's scoping).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as _pydantic_dataclass

STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]  # a share or a probability, in [0, 1]
Cosine = Annotated[float, Field(ge=-1, le=1)]


def params(cls: type | None = None, /, **kwargs):
    """``@params`` on a parameter group: a pydantic dataclass that refuses unknown keys."""
    def wrap(klass: type) -> type:
        return _pydantic_dataclass(klass, config=STRICT, **kwargs)
    return wrap if cls is None else wrap(cls)
