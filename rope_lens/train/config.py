"""Training configuration: frozen dataclasses and the named presets ``cpu``, ``gpu``, ``gemma-2b``.

Presets are plain Python objects, not config files. The CLI changes single fields with
``--set key=value`` (``model.`` prefix for :class:`ModelConfig` fields), parsed by
:func:`override`, so there is no YAML and no ``exec``.

The ``gemma-2b`` preset is the paper's App. D setting (Barbero et al., ICLR 2025): Gemma 2B (18 layers,
d_model 2048, 8 query heads, MQA, head_dim 256, GeGLU width 16384, 256k vocabulary), sequence
8192, batch 512, 10k steps. The paper reports no optimiser settings; ours are marked below.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rope_lens.errors import InputError
from rope_lens.train.encodings import PositionalEncoding, get_encoding


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the Gemma-style decoder (HF ``GemmaForCausalLM``)."""

    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 1  # 1 = MQA as in Gemma 2B; n_heads = MHA; in between = GQA
    head_dim: int = 32
    d_ff: int = 384  # width of each GeGLU branch (gate and up)
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.head_dim < 2 or self.head_dim % 2:
            raise InputError(f"head_dim must be even and >= 2, got {self.head_dim}")
        if self.n_heads % self.n_kv_heads:
            raise InputError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff"):
            if getattr(self, name) < 1:
                raise InputError(f"model.{name} must be positive, got {getattr(self, name)}")
        check_range("model.init_std", self.init_std, low=0.0, low_open=True)


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Refuse a setting outside its range (or NaN / infinite) in one line, before any step:
    a negative clip trains by gradient ascent, a negative lr or decay the wrong way, a beta
    of 1 or more never forgets, and torch only fails (if at all) deep inside the first step.

    Raises:
        InputError: naming the setting, its range and the value given.
    """
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise InputError(f"--set {name}: must be a finite number {bounds}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines one training run (with the encoding and seed)."""

    preset: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    encoding: str = "rope"  # any name get_encoding reads; stored in its canonical form
    theta: float = 10_000.0  # the paper's θ for every row except "RoPE θ = 500k"
    seed: int = 0
    dataset: str = "wiki"  # "wiki" or "flan"
    data_source: str = "ovos"  # "ovos" or a directory of {wiki,flan}_{train,valid,heldout} files
    seq_len: int = 128
    batch_size: int = 16  # sequences per optimiser step, summed over devices and micro-steps
    micro_batch_size: int = 16  # sequences per device per forward pass
    steps: int = 300
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_tokens: int = 16_384  # validation tokens per split; the same text at every length
    eval_lengths: tuple[int, ...] = (1, 2, 4)  # multiples of seq_len (length generalisation)
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    compile: bool = False
    fsdp: bool = False
    mixed_precision: str = "auto"  # "auto" = bf16 on CUDA, fp32 on CPU; or "no" / "bf16"
    activation_checkpointing: bool = False
    # One CPU thread and torch's deterministic algorithms: the same seed then gives the same
    # numbers whatever the machine's core count (a CPU reduction's order, and so its rounding,
    # depends on how many threads share it; docs/training.md#determinism measures it).
    deterministic: bool = False

    def __post_init__(self) -> None:
        # Parsed once, here: the config carries the canonical name ("0.75-RoPE_reversed" ->
        # "0.75-rope-reversed"), so run folders, checkpoints and resume checks agree.
        object.__setattr__(self, "encoding", self.positional_encoding.name)
        if self.dataset not in ("wiki", "flan"):
            raise InputError(f"dataset must be 'wiki' or 'flan', got {self.dataset!r}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise InputError(f"mixed_precision must be auto, no or bf16: {self.mixed_precision}")
        for name in ("seq_len", "steps", "eval_every", "ckpt_every", "log_every", "eval_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.eval_lengths or min(self.eval_lengths) < 1:
            raise InputError(f"eval_lengths must be positive multiples: {self.eval_lengths}")
        for name in ("batch_size", "micro_batch_size", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise InputError(f"--set warmup_steps: must be >= 0, got {self.warmup_steps}")
        check_range("lr", self.lr, low=0.0, low_open=True)
        check_range("min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0)
        check_range("weight_decay", self.weight_decay, low=0.0)
        check_range("beta1", self.beta1, low=0.0, high=1.0, high_open=True)
        check_range("beta2", self.beta2, low=0.0, high=1.0, high_open=True)
        check_range("grad_clip", self.grad_clip, low=0.0, low_open=True)
        check_range("theta", self.theta, low=0.0, low_open=True)
        if self.batch_size % self.micro_batch_size:
            raise InputError(
                f"batch_size {self.batch_size} is not a multiple of "
                f"micro_batch_size {self.micro_batch_size}"
            )

    @property
    def positional_encoding(self) -> PositionalEncoding:
        """The parsed encoding (raises InputError for an unknown name or bad theta)."""
        return get_encoding(self.encoding, self.theta)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def max_eval_len(self) -> int:
        return self.seq_len * max(self.eval_lengths)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig(**d.get("model", {}))
        if "eval_lengths" in d:
            d["eval_lengths"] = tuple(d["eval_lengths"])
        return cls(**d)


# Fields that may change when a run is resumed; every other field must match the checkpoint,
# otherwise the resumed curve would not be the one the checkpoint belongs to. ``steps`` is not
# one of them: the cosine schedule depends on it, so a longer run is a different run.
RESUMABLE_CHANGES = frozenset(
    {"eval_every", "ckpt_every", "keep_checkpoints", "log_every", "compile"}
)

# ~1.3M parameters, 100 steps x 8 x 128 = 102k tokens (~0.07 epochs of the ovos Wiki leads):
# a pipeline check, not a converged model. Sized so that the 28-run Table 2 grid fits in ~45
# minutes on a 2-core machine shared with other work (one thread per run, two runs at once,
# ~0.7-2k tokens/s each under load; 68-194 s per run with evaluation, median 86 s).
CPU = TrainConfig(
    preset="cpu",
    batch_size=8,
    micro_batch_size=8,
    steps=100,
    warmup_steps=10,
    eval_every=50,
    eval_tokens=8192,
    ckpt_every=25,
    log_every=10,
)

# ~34M parameters, for one GPU (bf16, SDPA): 2000 steps x 65k tokens = 131M tokens, i.e. ~25
# epochs of the ~5M-token offline Wiki set or ~4.5 of NIv1 (data-limited; docs/training.md).
# Optimiser settings are ours.
GPU = TrainConfig(
    preset="gpu",
    model=ModelConfig(
        vocab_size=8192, d_model=512, n_layers=8, n_heads=8, n_kv_heads=1, head_dim=64, d_ff=2048
    ),
    seq_len=1024,
    batch_size=64,
    micro_batch_size=32,
    steps=2000,
    lr=1e-3,
    warmup_steps=100,
    eval_every=250,
    eval_tokens=262_144,
    ckpt_every=500,
    log_every=25,
)

# The paper's Gemma 2B setting (App. D). lr/warmup/decay are not in the paper.
GEMMA_2B = TrainConfig(
    preset="gemma-2b",
    model=ModelConfig(
        vocab_size=256_000,
        d_model=2048,
        n_layers=18,
        n_heads=8,
        n_kv_heads=1,
        head_dim=256,
        d_ff=16_384,
    ),
    seq_len=8192,
    batch_size=512,
    micro_batch_size=1,
    steps=10_000,
    lr=3e-4,
    warmup_steps=500,
    eval_every=1000,
    eval_tokens=4_194_304,
    ckpt_every=250,
    log_every=10,
    fsdp=True,
    activation_checkpointing=True,
)

PRESETS: dict[str, TrainConfig] = {"cpu": CPU, "gpu": GPU, "gemma-2b": GEMMA_2B}


def get_preset(name: str) -> TrainConfig:
    """Look up a preset by name.

    Raises:
        InputError: the name is not one of :data:`PRESETS`.
    """
    if name not in PRESETS:
        raise InputError(f"unknown config {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _coerce(value: str, annotation: Any, key: str) -> Any:
    """Turn the text of ``--set key=value`` into the field's type."""
    kind = {"int": int, "float": float, "str": str, "bool": bool}.get(str(annotation), None)
    if kind is None and "tuple" in str(annotation):
        return tuple(int(v) for v in value.split(",") if v)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return kind(value) if kind else value
    except ValueError:
        raise InputError(f"--set {key}={value}: expected {annotation}") from None


def override(cfg: TrainConfig, assignments: Iterable[str]) -> TrainConfig:
    """Apply ``key=value`` overrides (``model.d_model=256``, ``steps=50``) to a config.

    Raises:
        InputError: malformed assignment, unknown field, or a value of the wrong type.
    """
    top: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--set expects key=value, got {item!r}")
        target, owner, name = (
            (model, ModelConfig, key[6:]) if key.startswith("model.") else (top, TrainConfig, key)
        )
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if name not in fields or name == "model":
            raise InputError(f"unknown setting {key!r}; known: {', '.join(sorted(fields))}")
        target[name] = _coerce(value, fields[name].type, key)
    new_model = dataclasses.replace(cfg.model, **model) if model else cfg.model
    return dataclasses.replace(cfg, model=new_model, **top)
