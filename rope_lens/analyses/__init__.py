"""Analyses: each returns a tidy pandas DataFrame and never plots.

``ANALYSES`` maps a CLI name to the module implementing it; each module exposes
``run(lm, batches, layers, **options) -> pd.DataFrame`` and ``summarize(df) -> str``.
"""

ANALYSES = {
    "band-norm": "rope_lens.analyses.band_norms",
    "heads": "rope_lens.analyses.heads",
    "profiles": "rope_lens.analyses.profiles",
    "per-token": "rope_lens.analyses.per_token",
    "decompose": "rope_lens.analyses.decompose",
    "apostrophe": "rope_lens.analyses.apostrophe",
    "ablation": "rope_lens.analyses.ablation",
    "critical": "rope_lens.analyses.critical",
    "massive-values": "rope_lens.analyses.massive_values",
    "sinks": "rope_lens.analyses.sinks",
    "passkey": "rope_lens.analyses.passkey",
}
