"""The kit's experiments: they train policies and record what they measure (``make experiments``,
``make spread``). ``comparisons`` (cached comparison runs), ``onpolicy`` (on-policy pairs), ``rounds`` (the
lessons' default run), ``sweeps``, ``spread`` (``make spread``'s record and command line; beside it, lowest
first: ``records``, ``spread_runs``, ``overopt``, ``family``, ``spread_report``), ``report`` and ``readme`` (the
README's results table).
``evaluation`` measures; only this subpackage trains."""
