"""Measuring a trained policy against its reference: generation, sampling, judging, win rates with intervals,
KL, implicit rewards, style probes and the results file. It never trains (the runs that do live in
``experiments``; their old paths such as ``evaluation.spread`` still import, see the package's ``_MOVED``)."""
