"""Load a model by registry name, hub id or local folder into a ``LoadedModel``.

The only module that loads transformers models. Every model gets rope-lens' attention
wrapper (``rope_lens.engine.native``) and its RoPE layout read from its own rotation
(``rope_lens.engine.probe``), checked against its config. On the ``tl`` backend it is then
wrapped by TransformerLens' ``TransformerBridge`` (which rebuilds attention eagerly so that
``hook_q``/``hook_rot_q``/``hook_pattern`` fire). trust_remote_code is never enabled unless
asked for explicitly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rope_lens.errors import InputError, ModelNotFoundError
from rope_lens.models import hub, packaged, placement
from rope_lens.models.registry import REGISTRY, ModelEntry, suggest
from rope_lens.models.rope_config import (
    INV_FREQ_KEY,
    RopeLayout,
    check_supported,
    pairing_for,
    probe_limit,
    rope_layout,
)

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LoadedModel:
    """A model ready for analysis.

    Attributes:
        name: what the user asked for (registry name, hub id or path).
        folder: local folder the weights were read from.
        revision: pinned hub revision, if any.
        hf_model: the transformers model (on ``native``, its attention implementation is
            rope-lens' wrapper of its own kernel; on ``tl``, the bridge's eager modules).
        tokenizer: its tokenizer.
        bridge: TransformerLens TransformerBridge around ``hf_model`` (``tl`` backend only;
            see ``get_bridge``).
        rope: per-layer RoPE facts, measured from the model and checked against its config
            (see ``RopeLayout``).
        device: device of the input embeddings.
        dtype: parameter dtype.
    """

    name: str
    folder: Path
    revision: str | None
    hf_model: Any
    tokenizer: Any
    bridge: Any
    rope: RopeLayout
    device: torch.device
    dtype: torch.dtype
    entry: ModelEntry | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    backend: str = "native"
    kernel: str = "sdpa"

    def reread_rope(self) -> None:
        """Read the RoPE layout again from the model's rotation as it is now (after editing
        its rotary buffers by hand, e.g. zeroing them to make a NoPE model): the config is
        no longer the truth, the model is."""
        probed = _probe(self.hf_model, self.device)
        self.rope = rope_layout(self.hf_model.config, self.rope.qk_norm, probed, check_config=False)

    def get_bridge(self) -> Any:
        """The TransformerLens bridge: this model's own on the ``tl`` backend; on ``native``,
        a second copy of the model (the bridge rewrites attention in place), built once."""
        if self.bridge is None:
            copy = load_model(
                str(self.folder),
                device=str(self.device),
                dtype=str(self.dtype).split(".")[-1],
                backend="tl",
                tokenizer=self.tokenizer,
            )
            self.bridge = copy.bridge
        return self.bridge

    @property
    def n_layers(self) -> int:
        return self.rope.n_layers

    @property
    def n_heads(self) -> int:
        return self.rope.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.rope.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.rope.head_dim

    def group(self, layer: int) -> int:
        """Query heads per KV head in ``layer`` (Gemma 4's full layers may differ)."""
        return self.rope.group(layer)

    @property
    def max_context(self) -> int:
        cfg = self.hf_model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return int(getattr(cfg, "max_position_embeddings", 0) or 2048)

    @property
    def bos_token_id(self) -> int | None:
        tok_bos = getattr(self.tokenizer, "bos_token_id", None)
        return tok_bos if tok_bos is not None else self.hf_model.config.bos_token_id

    def metadata(self) -> dict[str, Any]:
        """Facts for the JSON sidecar of every saved table."""
        return {
            "model": self.name,
            "folder": str(self.folder),
            "revision": self.revision,
            "architecture": (self.hf_model.config.architectures or ["?"])[0],
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "backend": self.backend,
            "attention_kernel": self.kernel,
            "rope": self.rope.describe(),
            "provenance": self.provenance,
        }

    @property
    def provenance(self) -> str:
        """Where the weights come from (registry models: instruct or base, and the GGUF they
        are dequantized from; otherwise the folder or hub id)."""
        if self.entry is not None:
            return self.entry.provenance
        if Path(self.folder).is_dir():
            return f"local folder {self.folder}"
        return f"{self.name} (hub id{', revision ' + self.revision if self.revision else ''})"


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown --device {device!r}; choose auto, cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"--device {device} asked for, but no CUDA GPU is visible: use --device cpu"
        )
    return device


def resolve_dtype(dtype: str | None, device: str) -> torch.dtype:
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown --dtype {dtype!r}; choose from auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_folder(name: str, revision: str | None = None) -> tuple[Path, ModelEntry | None]:
    """Registry name, local folder or hub id -> local folder with config and weights."""
    if name in REGISTRY:
        entry = REGISTRY[name]
        if entry.source == "gguf-package":
            return packaged.ensure_converted(entry), entry
        return hub.snapshot(entry.repo_id, revision or entry.revision), entry
    if hub.is_local_model_dir(name):
        return Path(name), None
    if Path(name).exists() or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{name!r} is not a model folder (no config.json inside)")
    if "/" in name:
        return hub.snapshot(name, revision), None
    close = suggest(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelNotFoundError(
        f"unknown model {name!r}{hint} (see `rope-lens models`, or pass a hub id or a folder)"
    )


def load_model(
    name: str,
    device: str | None = "auto",
    dtype: str | None = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    hf_model: Any | None = None,
    backend: str = "native",
    tokenizer: Any | None = None,
    offload: bool = False,
    max_memory: dict[Any, Any] | None = None,
) -> LoadedModel:
    """Load ``name`` and make it ready for analysis.

    Args:
        name: registry name (``rope-lens models``), hub id, or local HF folder.
        device: ``auto`` (CUDA if present, spread over all GPUs with accelerate), ``cpu``,
            ``cuda`` or ``cuda:N``.
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU) or an explicit dtype name.
        revision: hub revision to pin.
        trust_remote_code: off by default; never turned on implicitly.
        hf_model: an already-built model for ``name`` (tests, custom code); skips loading.
        backend: ``native`` (default: the model's own sdpa / eager / flash kernel, observed
            through transformers' attention interface) or ``tl`` (the TransformerLens bridge,
            eager attention with hook points).
        tokenizer: an already-loaded tokenizer (skips reading it from the folder).
        offload: let accelerate spill weights that do not fit to CPU RAM and disk
            (``rope_lens.models.placement``); without it a model too big fails in one line.
        max_memory: accelerate's per-device budget (``{0: "20GiB", "cpu": "30GiB"}``), e.g. to
            force a split.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from rope_lens.engine import BACKENDS, native

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
    folder, entry = resolve_folder(name, revision) if hf_model is None else _given_folder(name)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev) if hf_model is None else _param_dtype(hf_model)
    if hf_model is None:
        config_kernel = "eager" if backend == "tl" else None
        # Placement across devices (additive): rope_lens.models.placement
        placement.check_fits(name, folder, torch_dtype, dev, offload or bool(max_memory))
        place = placement.from_pretrained_kwargs(dev, offload, max_memory)
        hf_model = _from_pretrained(
            AutoModelForCausalLM, folder, torch_dtype, dev, trust_remote_code, config_kernel, place
        )
    assert hf_model is not None
    hf_model.eval()
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    assert tokenizer is not None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # right padding keeps real tokens at positions 0..n-1

    override = getattr(hf_model.config, INV_FREQ_KEY, None)
    if override is not None:  # a rope-lens training checkpoint: NoPE / reversed / partial
        from rope_lens.train.encodings import apply_inv_freq

        apply_inv_freq(hf_model, override)
    has_qk_norm = any(n.endswith(("q_norm", "query_norm")) for n, _ in hf_model.named_modules())
    check_supported(hf_model.config)
    kernel = "eager" if backend == "tl" else native.base_kernel_for(hf_model, dev)
    native.install(hf_model, kernel)
    input_device = placement.input_device(hf_model)  # offloaded embeddings sit on meta
    layout = rope_layout(hf_model.config, has_qk_norm, _probe(hf_model, input_device))

    bridge = None
    if backend == "tl":
        bridge = boot_bridge(folder, hf_model, tokenizer, input_device)
    return LoadedModel(
        name=name,
        folder=folder,
        revision=revision or (entry.revision if entry else None),
        hf_model=hf_model,
        tokenizer=tokenizer,
        bridge=bridge,
        rope=layout,
        device=input_device,
        dtype=torch_dtype,
        entry=entry,
        backend=backend,
        kernel=kernel,
    )


def _text_config(model: Any) -> Any:
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _probe_token(model: Any) -> int:
    """Any ordinary token id for the layout probe (all its copies must be the same token)."""
    return min(100, int(getattr(_text_config(model), "vocab_size", 101)) - 1)


def _probe(model: Any, device: torch.device) -> Any:
    """Measure ``model``'s layout (``rope_lens.engine.probe``) within the positions its
    config says keep one rotation regime."""
    from rope_lens.engine.probe import probe

    cfg = _text_config(model)
    return probe(
        model,
        int(cfg.num_hidden_layers),
        _probe_token(model),
        device,
        max_position=probe_limit(cfg),
        vocab_size=int(getattr(cfg, "vocab_size", 0) or 0) or None,
        prefer=pairing_for(cfg),
    )


def _given_folder(name: str) -> tuple[Path, ModelEntry | None]:
    """The folder behind a model the caller built: the named one when it exists."""
    if name in REGISTRY or hub.is_local_model_dir(name):
        return resolve_folder(name)
    return Path(name), None


def _param_dtype(model: Any) -> torch.dtype:
    return next(model.parameters()).dtype


def _from_pretrained(auto, folder, torch_dtype, dev, trust_remote_code, kernel, place=None) -> Any:
    place = place if place is not None else placement.from_pretrained_kwargs(dev)
    try:
        model = auto.from_pretrained(
            folder,
            dtype=torch_dtype,
            **place,
            attn_implementation=kernel,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"cannot load weights from {folder}: {err}".split("\n")[0]
        ) from err
    if place["device_map"] is None:
        model.to(dev)
    return model


def boot_bridge(folder: Path, hf_model: Any, tokenizer: Any, device: torch.device) -> Any:
    """Wrap ``hf_model`` in TransformerLens' bridge. The bridge replaces the model's attention
    modules by its own eager ones: a native-backend model must not be wrapped in place."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(
        str(folder), hf_model=hf_model, tokenizer=tokenizer, device=str(device)
    )
