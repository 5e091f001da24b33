"""Positional encodings for training, each one an inverse-frequency vector (Barbero et al., ICLR 2025, §6.1, App. D).

Every encoding in the paper's Table 2 is a full rotate-half head (HF ``rotate_half``, chunk k =
dims ``(k, k + d/2)``) with one frequency per chunk, zero meaning "not rotated":

====================  ========================================================================
name                  ``inv_freq`` (length ``head_dim / 2``, chunk 0 = highest frequency)
====================  ========================================================================
``nope``              all zeros (p = 0)
``rope``              ``default_inv_freq(θ, d)`` with the config's θ (10k in the paper)
``rope-500k``         ``default_inv_freq(5e5, d)``; any ``rope-<θ>`` such as ``rope-1m``
``<p>-rope``          p-RoPE: ``p_rope_inv_freq(θ, d, p)``, the lowest ``1 - p`` set to 0
``<p>-rope-reversed`` ``reversed_p_rope_inv_freq(θ, d, p)``, the highest ``1 - p`` set to 0
``<p>-rope-partial``  ``[default_inv_freq(θ, r), 0 ... 0]`` with ``r = partial_rotary_dim(d, p)``
====================  ========================================================================

``<p>-rope-partial`` is GPT-NeoX partial rotary: the first ``r`` dims rotate (rotate-half among
themselves) with frequencies recomputed over ``r``, the rest do not. That is the same map as
the full-head vector above after a fixed permutation of head coordinates, which a model trained
from scratch absorbs into W_Q/W_K; ``tests/unit/test_train_encodings.py`` proves it.

The frequency math is ``rope_lens.rope``; this module only names and validates it. It is the
one home of the encoding concept: Table 2's list and labels (:data:`TABLE2_ENCODINGS`, read by
``rope-lens table``, the Table 2 code and its figures), name parsing (:func:`get_encoding`, run
once: :class:`~rope_lens.train.config.TrainConfig` stores the canonical name), and writing a
trained model's exact frequencies into its rotary buffers (:func:`apply_inv_freq`, used by the
trainer and by ``load_model``). Importing it does not import torch (``rope-lens --help`` reads
the list), so torch is imported inside the functions that need it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rope_lens.errors import CheckpointError, InputError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from rope_lens.rope import RopeSpec

# The frequency family of an encoding (not "kind": that word names q/k/v elsewhere).
Family = Literal["nope", "rope", "p-rope", "reversed", "partial"]

# The seven rows of Table 2, in the paper's order, with the paper's labels: the only copy.
TABLE2_ENCODINGS: tuple[tuple[str, str], ...] = (
    ("nope", "NoPE"),
    ("rope", "RoPE θ = 10k"),
    ("rope-500k", "RoPE θ = 500k"),
    ("0.75-rope-reversed", "0.75-RoPE_reversed"),
    ("0.75-rope-partial", "0.75-RoPE_partial"),
    ("0.25-rope", "0.25-RoPE"),
    ("0.75-rope", "0.75-RoPE"),
)

_THETA_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6}
_NAME = re.compile(r"^(?P<p>[-+0-9.e]+)-rope(?:-(?P<variant>reversed|partial))?$")
_ROPE = re.compile(r"^rope(?:-(?P<theta>[0-9.]+)(?P<unit>[km]?))?$")


TABLE2_NAMES: tuple[str, ...] = tuple(name for name, _ in TABLE2_ENCODINGS)
TABLE2_LABELS: dict[str, str] = dict(TABLE2_ENCODINGS)


def label(name: str) -> str:
    """The paper's label of an encoding name (the name itself when it is not in Table 2)."""
    return TABLE2_LABELS.get(name, name)


@dataclass(frozen=True)
class PositionalEncoding:
    """A named positional encoding for training (the theory module's three families are
    ``rope_lens.theory.kernel.Family``).

    Attributes:
        name: canonical name, e.g. ``"0.75-rope"`` (also the run-directory label).
        family: which family of frequency vectors.
        p: fraction of frequencies (or dims, for ``partial``) that rotate.
        theta: base wavelength θ.
    """

    name: str
    family: Family
    p: float
    theta: float

    def inv_freq(self, head_dim: int) -> Tensor:
        """Frequencies (rad/token) of all ``head_dim / 2`` rotate-half chunks: a float64
        vector of length ``head_dim / 2``.

        Raises:
            InputError: ``head_dim`` odd or < 2.
        """
        import torch

        from rope_lens import rope

        if not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
            raise InputError(f"head_dim must be an even integer >= 2, got {head_dim!r}")
        half = head_dim // 2
        if self.family == "nope":
            return torch.zeros(half, dtype=torch.float64)
        if self.family == "rope":
            return rope.default_inv_freq(self.theta, head_dim)
        if self.family == "p-rope":
            return rope.p_rope_inv_freq(self.theta, head_dim, self.p)
        if self.family == "reversed":
            return rope.reversed_p_rope_inv_freq(self.theta, head_dim, self.p)
        dim = rope.partial_rotary_dim(head_dim, self.p)
        out = torch.zeros(half, dtype=torch.float64)
        if dim >= 2:
            out[: dim // 2] = rope.default_inv_freq(self.theta, dim)
        return out

    def rope_spec(self, head_dim: int) -> RopeSpec:
        """The analysis view: how a trained model of this encoding rotates q and k."""
        from rope_lens.rope import RopeSpec

        return RopeSpec(
            head_dim=head_dim,
            inv_freq=self.inv_freq(head_dim),
            pairing="half",
            rope_type=f"rope_lens:{self.name}",
            theta=self.theta,
            extra={"encoding": self.name, "p": self.p},
        )

    def hf_rope_parameters(self) -> dict[str, Any]:
        """The closest native transformers ``rope_parameters``.

        ``nope``, ``rope`` and ``p-rope`` are exact (``proportional`` = p-RoPE, proven in the
        tests), so a plain ``AutoModelForCausalLM`` load rotates correctly. ``reversed`` and
        ``partial`` have no native form: loaders must apply ``config.rope_lens_inv_freq``.
        """
        if self.family == "rope":
            return {"rope_type": "default", "rope_theta": self.theta}
        if self.family in ("nope", "p-rope"):
            p = 0.0 if self.family == "nope" else self.p
            return {
                "rope_type": "proportional",
                "rope_theta": self.theta,
                "partial_rotary_factor": p,
            }
        return {"rope_type": "default", "rope_theta": self.theta}

    @property
    def hf_native(self) -> bool:
        return self.family in ("nope", "rope", "p-rope")


def _format_p(p: float) -> str:
    return f"{p:g}"


def get_encoding(name: str, theta: float = 10_000.0) -> PositionalEncoding:
    """Parse an encoding name (see the module table); ``theta`` is the default base.

    Raises:
        InputError: unknown name, or p outside [0, 1].
    """
    if not isinstance(name, str):
        raise InputError(f"encoding must be a name, got {name!r}")
    key = name.strip().lower().replace("_", "-")
    if not (math.isfinite(theta) and theta > 1):
        raise InputError(f"theta must be a finite number > 1, got {theta!r}")
    if key == "nope":
        return PositionalEncoding("nope", "nope", 0.0, theta)
    if m := _ROPE.match(key):
        if m["theta"] is None:
            return PositionalEncoding("rope", "rope", 1.0, theta)
        value = float(m["theta"]) * _THETA_SUFFIX[m["unit"]]
        if value <= 1:
            raise InputError(f"encoding {name!r}: θ must be > 1")
        return PositionalEncoding(key, "rope", 1.0, value)
    if m := _NAME.match(key):
        try:
            p = float(m["p"])
        except ValueError:
            raise InputError(f"encoding {name!r}: {m['p']!r} is not a number") from None
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise InputError(f"encoding {name!r}: p must be in [0, 1], got {p:g}")
        variant = m["variant"]
        families: dict[str | None, Family] = {
            None: "p-rope",
            "reversed": "reversed",
            "partial": "partial",
        }
        family = families[variant]
        canonical = f"{_format_p(p)}-rope" + (f"-{variant}" if variant else "")
        return PositionalEncoding(canonical, family, p, theta)
    known = ", ".join(TABLE2_NAMES)
    raise InputError(
        f"unknown encoding {name!r}; use nope, rope, rope-<θ> (e.g. rope-500k), <p>-rope, "
        f"<p>-rope-reversed or <p>-rope-partial with p in [0, 1] (Table 2: {known})"
    )


def _freq_buffers(module: nn.Module) -> list[str]:
    """Names of a rotary module's frequency buffers: ``inv_freq``, or one per layer type
    (``sliding_attention_inv_freq``, ``full_attention_inv_freq``: Gemma 3 in transformers 5)."""
    return [
        name
        for name, _ in module.named_buffers(recurse=False)
        if name == "inv_freq" or (name.endswith("_inv_freq") and "original" not in name)
    ]


def rotary_modules(hf_model: nn.Module) -> list[nn.Module]:
    """Every rotary-embedding module of an HF model that holds frequency buffers (one for
    Gemma/Llama: ``model.rotary_emb``)."""
    return [
        m
        for m in hf_model.modules()
        if "RotaryEmbedding" in type(m).__name__ and _freq_buffers(m)
    ]


def apply_inv_freq(hf_model: nn.Module, inv_freq: Sequence[float] | Tensor) -> None:
    """Write an exact frequency vector into the model's rotary buffers.

    HF keeps ``inv_freq`` and ``original_inv_freq`` (per layer type on Gemma 3) as
    non-persistent buffers recomputed from ``config.rope_parameters`` at load time, so
    encodings without a native rope type (reversed, partial) must be re-applied after every
    ``from_pretrained``; the checkpoint stores the vector as ``config.rope_lens_inv_freq``.

    This is the one function that does it: the trainer calls it after building a model and
    ``rope_lens.models.load_model`` after loading a checkpoint. Every frequency buffer of every
    rotary module gets the vector, and its ``original_*`` twin too (dynamic rope types reset
    from it).

    Args:
        hf_model: an HF causal LM (``GemmaForCausalLM``, ``LlamaModel``, ...).
        inv_freq: ``head_dim / 2`` frequencies in rotate-half order, highest first.

    Raises:
        CheckpointError: no rotary module, or a vector of the wrong length.
    """
    import torch

    vec = torch.as_tensor(inv_freq, dtype=torch.float64).detach().cpu()
    modules = rotary_modules(hf_model)
    if not modules:
        raise CheckpointError(f"{type(hf_model).__name__} has no rotary embedding to patch")
    if vec.ndim != 1 or not torch.isfinite(vec).all() or (vec < 0).any():
        raise CheckpointError("rope_lens_inv_freq must be a 1-D list of finite values >= 0")
    for module in modules:
        buffers = dict(module.named_buffers(recurse=False))
        for name in _freq_buffers(module):
            buf = buffers[name]
            if buf.shape != vec.shape:
                raise CheckpointError(
                    f"rope_lens_inv_freq has {vec.numel()} values but the model's rotary buffer "
                    f"{name} has {buf.numel()} (head_dim / 2); the checkpoint does not match "
                    "its config"
                )
            original = buffers.get(name.replace("inv_freq", "original_inv_freq"))
            with torch.no_grad():
                buf.copy_(vec.to(buf.dtype))
                if original is not None and original.shape == vec.shape:
                    original.copy_(vec.to(original.dtype))
        # The frequencies are fixed by training; 1.0 is what every encoding here uses.
        setattr(module, "attention_scaling", 1.0)  # noqa: B010 (a plain attribute, not a buffer)


# The name the trainer's modules import; ``PositionalEncoding`` says what it is.
Encoding = PositionalEncoding
