"""Load a model by registry name, hub id or local folder into a ``LoadedModel``.

This and ``extract.py`` are the only modules that know about transformers / TransformerLens
loading. The HF model is wrapped by TransformerLens' ``TransformerBridge`` (which rebuilds
attention eagerly so that ``hook_q``/``hook_rot_q``/``hook_pattern`` fire); trust_remote_code is
never enabled unless asked for explicitly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rope_lens.errors import InputError, ModelNotFoundError
from rope_lens.models import hub, packaged
from rope_lens.models.registry import REGISTRY, ModelEntry, suggest
from rope_lens.models.rope_config import (
    INV_FREQ_KEY,
    RopeLayout,
    check_against_model,
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
        hf_model: the transformers model (its attention modules are wrapped by the bridge).
        tokenizer: its tokenizer.
        bridge: TransformerLens TransformerBridge around ``hf_model``.
        rope: per-layer RoPE facts read from the config (see ``RopeLayout``).
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
            "rope": self.rope.describe(),
        }


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
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


def _apply_inv_freq_override(hf_model: Any, inv_freq: list[float]) -> None:
    """Training checkpoints store exact frequencies (NoPE / reversed / partial are not HF rope
    types); write them into the rotary buffers, which transformers recomputes from config."""
    vec = torch.tensor(inv_freq, dtype=torch.float32)
    for name, module in hf_model.named_modules():
        if name.endswith("rotary_emb"):
            dev = module.inv_freq.device
            module.inv_freq = vec.to(dev)
            if hasattr(module, "original_inv_freq"):
                module.original_inv_freq = vec.clone().to(dev)


def load_model(
    name: str,
    device: str | None = "auto",
    dtype: str | None = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    hf_model: Any | None = None,
) -> LoadedModel:
    """Load ``name`` and wrap it for analysis.

    Args:
        name: registry name (``rope-lens models``), hub id, or local HF folder.
        device: ``auto`` (CUDA if present, spread over all GPUs with accelerate), ``cpu``,
            ``cuda`` or ``cuda:N``.
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU) or an explicit dtype name.
        revision: hub revision to pin.
        trust_remote_code: off by default; never turned on implicitly.
        hf_model: an already-built model for ``name`` (tests, custom code); skips loading.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
    folder, entry = resolve_folder(name, revision)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if hf_model is None:
        multi_gpu = dev == "cuda" and torch.cuda.device_count() > 1
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(
                folder,
                dtype=torch_dtype,
                device_map="auto" if multi_gpu else None,
                attn_implementation="eager",
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(
                f"cannot load weights from {folder}: {err}".split("\n")[0]
            ) from err
        if not multi_gpu:
            hf_model.to(dev)
    hf_model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # right padding keeps real tokens at positions 0..n-1

    override = getattr(hf_model.config, INV_FREQ_KEY, None)
    if override is not None:
        _apply_inv_freq_override(hf_model, override)
    has_qk_norm = any(n.endswith(("q_norm", "query_norm")) for n, _ in hf_model.named_modules())
    layout = rope_layout(hf_model.config, has_qk_norm)
    check_against_model(layout, hf_model)

    from transformer_lens.model_bridge import TransformerBridge

    input_device = hf_model.get_input_embeddings().weight.device
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=hf_model, tokenizer=tokenizer, device=str(input_device)
    )
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
    )
