"""rope_lens: find out how language models use Rotary Positional Encodings.

Library layout: ``rope`` (pure frequency math), ``models`` (registry and loading),
``extract`` (hooks and streaming reductions), ``analyses`` (DataFrames), ``viz`` (figures).
Heavy modules are imported lazily so ``import rope_lens`` and the CLI start fast.
"""

from rope_lens.rope import (
    RopeError,
    RopeSpec,
    chunk_norms,
    default_inv_freq,
    p_rope_inv_freq,
    reversed_p_rope_inv_freq,
    rotate,
    spec_from_rope_parameters,
    to_chunks,
)

__version__ = "0.1.0"

__all__ = [
    "RopeError",
    "RopeSpec",
    "chunk_norms",
    "default_inv_freq",
    "p_rope_inv_freq",
    "reversed_p_rope_inv_freq",
    "rotate",
    "spec_from_rope_parameters",
    "to_chunks",
    "__version__",
]
