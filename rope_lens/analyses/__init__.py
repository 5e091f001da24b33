"""Analyses: each returns a tidy pandas DataFrame and never plots.

``ANALYSES`` maps a CLI name to the module implementing it; each module exposes
``run(lm, batches, layers, **options) -> pd.DataFrame`` and ``summarize(df) -> str``.
"""

ANALYSES = {
    "band-norm": "rope_lens.analyses.band_norms",
}
