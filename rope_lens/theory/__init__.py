"""The paper's theory, checked numerically: every result is a function returning a DataFrame.

One module per result of the paper (Barbero et al., ICLR 2025): ``decay`` (Figs 2, 8, 9), ``gaussian`` (Prop 3.2),
``constructions`` (Prop 3.1, Thm 5.3), ``required_norm`` (Thm 5.3's norm per frequency band),
``nope`` (Prop 5.2), ``long_context`` (Thm 6.1) and ``table1`` (Table 1). All of it is pure
torch/pandas on top of :mod:`rope_lens.rope`; figures live in :mod:`rope_lens.viz.theory`.
"""

from rope_lens.theory.constructions import (
    distance_argmax,
    key_for_distance,
    positional_head,
    positional_sharpness,
    target_attention,
)
from rope_lens.theory.decay import (
    activation_curve,
    constant_gaussian_frame,
    decay_frame,
    decay_limit,
    random_rope_frame,
)
from rope_lens.theory.gaussian import default_distances, gaussian_expectation
from rope_lens.theory.kernel import (
    ENCODINGS,
    encoding_spec,
    relative_logits,
    relative_logits_per_chunk,
    sequence_logits,
)
from rope_lens.theory.long_context import (
    apostrophe_channel,
    overtaking_closed_form,
    overtaking_length,
    overtaking_table,
    paper_rotation_numbers,
)
from rope_lens.theory.nope import adversarial_search, bos_x_x_logits, random_weight_search
from rope_lens.theory.required_norm import (
    local_closed_form,
    required_norm_by_band,
    required_norm_sq,
)
from rope_lens.theory.table1 import PAPER_TABLE1, table1, table1_markdown

__all__ = [
    "ENCODINGS",
    "PAPER_TABLE1",
    "activation_curve",
    "adversarial_search",
    "apostrophe_channel",
    "bos_x_x_logits",
    "constant_gaussian_frame",
    "decay_frame",
    "decay_limit",
    "default_distances",
    "distance_argmax",
    "encoding_spec",
    "gaussian_expectation",
    "key_for_distance",
    "local_closed_form",
    "overtaking_closed_form",
    "overtaking_length",
    "overtaking_table",
    "paper_rotation_numbers",
    "positional_head",
    "positional_sharpness",
    "random_rope_frame",
    "random_weight_search",
    "relative_logits",
    "relative_logits_per_chunk",
    "required_norm_by_band",
    "required_norm_sq",
    "sequence_logits",
    "table1",
    "table1_markdown",
    "target_attention",
]
