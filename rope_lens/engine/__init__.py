"""The engines that run a model and hand its attention inputs to the analyses.

- ``native`` (default): the transformers model with its own attention kernel (sdpa, or eager
  for soft-capped models), observed through transformers' ``AttentionInterface``. The only
  module that knows the attention interface is :mod:`rope_lens.engine.native`.
- ``tl``: the TransformerLens bridge (eager attention re-implemented with hook points); the
  only modules that know its hook names are ``rope_lens.extract`` and ``rope_lens.attention``.

:mod:`rope_lens.engine.kernels` holds the attention arithmetic that never builds a ``[T, T]``
tensor (log-sum-exp and attention-weighted sums from a fused kernel or in query blocks, with
sliding windows, chunks and learned sink logits), :mod:`rope_lens.engine.probe` measures every
attention layer's RoPE layout from the model's behaviour, and
:mod:`rope_lens.engine.rotation_fit` is the math that reads a rotation from vectors seen at
shifted positions.
"""

BACKENDS = ("native", "tl")
