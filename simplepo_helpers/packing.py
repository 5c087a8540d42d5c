"""Moved to :mod:`simplepo_helpers.fast.packing` (the fast path's door is ``simplepo_helpers.fast``).

Kept so that ``from simplepo_helpers.packing import describe_layout`` (notebook 04) still works.
"""

from .fast.packing import *  # noqa: F403
from .fast.packing import __all__  # noqa: F401
