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


def __getattr__(name: str):
    # Lens pulls in transformers and TransformerLens: import it only when asked for.
    if name == "Lens":
        from rope_lens.lens import Lens

        return Lens
    raise AttributeError(f"module 'rope_lens' has no attribute {name!r}")


__all__ = [
    "Lens",
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
