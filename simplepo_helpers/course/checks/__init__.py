"""The exercise graders, one module per notebook (``nb01`` ... ``nb07``), registered in notebook order on import.

``simplepo_helpers.course.check`` is the public door: ``from simplepo_helpers.course.check import check``.
"""

from . import nb01, nb02, nb03, nb04, nb05, nb06, nb07  # noqa: F401  (importing registers the graders, in this order)
