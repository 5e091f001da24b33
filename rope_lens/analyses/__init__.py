"""Analyses: each returns a tidy pandas DataFrame and never plots.

Each analysis is registered once, as an ``AnalysisSpec`` in :mod:`rope_lens.analyses.registry`
(module, options, table, whether it needs a forward pass); its module exposes
``analyze(lm, make_batches, layers, options, progress, total) -> pd.DataFrame`` and
``summarize(df) -> str``. ``ANALYSES`` maps each CLI name to its module.
"""

from rope_lens.analyses.registry import SPECS

ANALYSES = {name: s.module for name, s in SPECS.items()}
