"""Tensor type aliases and the one glossary of dimension names used across rope_lens.

Dimension names (use only these in jaxtyping strings):

- ``batch``: sequences in a batch.
- ``pos``: token positions (queries or keys).
- ``key_pos``: key positions when a tensor has both query and key axes.
- ``head``: query heads of one layer.
- ``kv_head``: key/value heads of one layer (fewer than ``head`` under GQA/MQA).
- ``d_head``: the head dimension.
- ``chunk``: 2-D frequency chunks of a head vector (``d_head // 2`` of them); chunk 0 is the
  highest frequency.
- ``layer``: decoder layers.
"""

from __future__ import annotations

from typing import Literal

from jaxtyping import Float, Int
from torch import Tensor

# How the two coordinates of each frequency chunk sit in a head vector.
# "half": chunk k = dims (k, k + d/2)  (HF Llama/Gemma/Qwen ``rotate_half``, GPT-NeoX, JAX Gemma).
# "interleaved": chunk k = dims (2k, 2k + 1)  (the paper's notation, Meta's original Llama, GPT-J).
Pairing = Literal["half", "interleaved"]

HeadVectors = Float[Tensor, "batch pos head d_head"]
Positions = Int[Tensor, "batch pos"]
Chunks = Float[Tensor, "... chunk 2"]

__all__ = ["Pairing", "HeadVectors", "Positions", "Chunks", "Float", "Int", "Tensor"]
