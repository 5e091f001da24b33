"""Train NoPE / RoPE / p-RoPE Gemma-style language models and reproduce the p-RoPE table.

Modules: ``config`` (frozen dataclasses and presets), ``encodings`` (encoding name ->
frequency vector, ``apply_inv_freq``), ``model`` (HF Gemma builder and loader), ``corpora`` and
``data`` (offline text, tokenizer, caches, packing), ``loop`` (accelerate training loop),
``checkpoint`` (atomic checkpoints), ``evaluate`` (perplexity at 1x/2x/4x length), ``table``
(the Table 2 grid) and ``dryrun`` (memory and throughput plan for big configs).

Heavy dependencies (transformers, accelerate) are imported inside functions, so importing this
package is cheap.
"""

from rope_lens.train.config import PRESETS, ModelConfig, TrainConfig, get_preset, override
from rope_lens.train.encodings import Encoding, apply_inv_freq, get_encoding

__all__ = [
    "PRESETS",
    "Encoding",
    "ModelConfig",
    "TrainConfig",
    "apply_inv_freq",
    "get_encoding",
    "get_preset",
    "override",
]
