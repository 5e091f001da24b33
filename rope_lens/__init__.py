"""rope_lens: find out how language models use Rotary Positional Encodings.

Library layout: ``rope`` (pure frequency math), ``models`` (registry and loading),
``extract`` (hooks and streaming reductions), ``analyses`` (DataFrames), ``viz`` (figures),
``lens.Lens`` (the notebook entry point). Everything is imported lazily, so ``import
rope_lens`` and the CLI's ``--help`` start without loading torch.
"""

import importlib

__version__ = "0.1.0"

# name -> module that defines it (imported on first access, PEP 562)
_LAZY = {
    "Lens": "rope_lens.lens",
    "RopeError": "rope_lens.rope",
    "RopeSpec": "rope_lens.rope",
    "chunk_norms": "rope_lens.rope",
    "default_inv_freq": "rope_lens.rope",
    "p_rope_inv_freq": "rope_lens.rope",
    "reversed_p_rope_inv_freq": "rope_lens.rope",
    "rotate": "rope_lens.rope",
    "spec_from_rope_parameters": "rope_lens.rope",
    "to_chunks": "rope_lens.rope",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rope_lens' has no attribute {name!r}")
