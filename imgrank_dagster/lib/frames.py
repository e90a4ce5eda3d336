"""The type of what assets pass through the IO manager: pandas DataFrames.

Asset functions are annotated with `Frame`, which Dagster sees as Any: annotating them with
pandas' own class would make loading the definitions import pandas (about 0.3 s) in every
process that loads them, run workers included. Type checkers see pandas.DataFrame.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pandas import DataFrame as Frame
else:
    Frame = Any

__all__ = ["Frame"]
