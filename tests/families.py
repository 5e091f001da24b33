"""What every tiny family's attention layers do, written by hand from transformers 5.25's modeling
code (not from rope-lens' measurement), and the docs table generated from it.

``tests/unit/test_families.py`` checks each family's measured layout against ``EXPECTED`` and its
tables against a reference computed in the test from the model's own eager attention;
``tests/unit/test_docs_families.py`` checks that docs/engine.md lists exactly these families.
Regenerate the docs table with ``python -m tests.families --write``; ``python -m tests.families
--residuals [MODEL ...]`` prints the probe's fit residuals beside its tolerances.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rope_lens.models.tiny import FAMILIES


@dataclass(frozen=True)
class Expected:
    """One family's attention layout (layers of the tiny model, see ``rope_lens.models.tiny``).

    pairing / clockwise: how ``apply_rotary_pos_emb`` pairs and turns dims (nanochat's
    ``rotate_half`` is flipped: it turns clockwise). rotary_dim: rotated dims of a rotating
    layer (head_dim 16 unless ``head_dims`` says otherwise). turning: chunks with a nonzero
    frequency, per layer where not ``rotary_dim // 2``. nope: layers that skip the rotation.
    skipped: layers without softmax attention, with their config layer type. scaling: the
    factor on cos / sin (YaRN / LongRoPE). window / chunk: per layer. sinks: learned sink
    logits. index_scaled: layers whose q is scaled by a factor of the token index. note: the
    docs table's words.
    """

    pairing: str = "half"
    clockwise: bool = False
    rotary_dim: int = 16
    head_dims: dict[int, int] = field(default_factory=dict)
    turning: dict[int, int] = field(default_factory=dict)
    nope: frozenset[int] = frozenset()
    skipped: dict[int, str] = field(default_factory=dict)
    scaling: float = 1.0
    window: dict[int, int] = field(default_factory=dict)
    chunk: dict[int, int] = field(default_factory=dict)
    sinks: bool = False
    index_scaled: frozenset[int] = frozenset()
    note: str = ""


def _yarn(factor: float) -> float:
    return 0.1 * math.log(factor) + 1.0


EXPECTED: dict[str, Expected] = {
    "llama-linear": Expected(note="linear scaling"),
    "llama-dynamic": Expected(note="dynamic NTK (frequencies fixed up to its original length)"),
    "llama-yarn": Expected(scaling=_yarn(4.0), note="YaRN, attention factor 1.139"),
    "llama-longrope": Expected(
        scaling=math.sqrt(1 + math.log(1024 / 64) / math.log(64)),
        note="LongRoPE short factors (its long ones past 64 tokens are refused for pre-rotation "
        "views)",
    ),
    "mistral": Expected(window={0: 8, 1: 8}, note="sliding window in every layer"),
    "qwen2": Expected(),
    "qwen3": Expected(note="QK-norm before RoPE"),
    "gemma": Expected(),
    "gemma2": Expected(window={0: 8}, note="tanh soft-cap (eager kernel), sliding / full"),
    "gemma3": Expected(window={0: 8, 1: 8}, note="QK-norm, sliding theta 1e4 / full 1e6"),
    "gemma4": Expected(
        head_dims={3: 32},
        rotary_dim=16,
        turning={3: 4},
        window={0: 8, 1: 8, 2: 8},
        note="full layers: 32-dim heads, p-RoPE (proportional, p = 0.25), 1 KV head",
    ),
    "phi": Expected(rotary_dim=8, note="partial rotary 50%"),
    "phi3": Expected(),
    "gpt_neox": Expected(rotary_dim=4, note="partial rotary 25%"),
    "stablelm": Expected(rotary_dim=4, note="partial rotary 25%"),
    "olmo2": Expected(note="QK-norm over the whole projection"),
    "cohere": Expected(pairing="interleaved"),
    "gptj": Expected(pairing="interleaved", rotary_dim=8, note="no rope_parameters: measured"),
    "granite": Expected(note="attention multiplier"),
    "glm": Expected(pairing="interleaved", rotary_dim=8, note="partial interleaved"),
    "smollm3": Expected(nope=frozenset({1, 3}), note="NoPE every 2nd layer (4th in SmolLM3-3B)"),
    "llama4": Expected(
        pairing="interleaved",
        nope=frozenset({1, 3}),
        chunk={0: 8, 2: 8},
        index_scaled=frozenset({1, 3}),
        note="complex (interleaved) RoPE, L2 norm after it, chunked attention; NoPE layers "
        "with attention temperature tuning",
    ),
    "cohere2": Expected(
        pairing="interleaved",
        nope=frozenset({3}),
        window={0: 8, 1: 8, 2: 8},
        note="Command R7B: sliding layers rotate, the global one is NoPE",
    ),
    "exaone4": Expected(
        nope=frozenset({3}), window={0: 8, 1: 8, 2: 8}, note="global layers NoPE, QK-norm"
    ),
    "qwen3_next": Expected(
        rotary_dim=4,
        skipped={0: "linear_attention", 1: "linear_attention", 2: "linear_attention"},
        note="gated delta-net on 3 of 4 layers (listed, not analysed); gated attention output",
    ),
    "qwen3_5": Expected(
        rotary_dim=4,
        skipped={0: "linear_attention", 1: "linear_attention", 2: "linear_attention"},
        note="gated delta-net on 3 of 4 layers (listed, not analysed)",
    ),
    "lfm2": Expected(
        skipped={0: "conv", 2: "conv"}, note="short-convolution layers (listed, not analysed)"
    ),
    "gpt_oss": Expected(
        scaling=_yarn(32.0),
        window={0: 8},
        sinks=True,
        note="learned sink logits (eager kernel), YaRN, sliding / full",
    ),
    "mixtral": Expected(note="MoE"),
    "qwen3_moe": Expected(note="MoE, QK-norm"),
    "olmoe": Expected(note="MoE, QK-norm"),
    "apertus": Expected(note="llama3 scaling, QK-norm, xIELU"),
    "helium": Expected(pairing="interleaved"),
    "seed_oss": Expected(),
    "ernie4_5": Expected(pairing="interleaved"),
    "glm4": Expected(pairing="interleaved", rotary_dim=8, note="partial interleaved"),
    "persimmon": Expected(rotary_dim=8, note="partial rotary 50%, QK layer-norm"),
    "nemotron": Expected(rotary_dim=8, note="partial rotary 50%"),
    "falcon": Expected(note="new decoder architecture"),
    "vaultgemma": Expected(window={0: 8}, note="soft-cap (eager kernel)"),
    "ministral3": Expected(note="YaRN, position-dependent query scale past 256 tokens"),
    "nanochat": Expected(clockwise=True, note="clockwise rotation, norm after RoPE"),
}

# Families refused in one line, and why (the tests check the refusal).
REFUSED = {
    "deepseek_v3": "multi-head latent attention (MLA): no single rotated key per head",
}

START, END = "<!-- families:start -->", "<!-- families:end -->"


def doc_table() -> str:
    """The docs/engine.md table of every tested family (between START and END)."""
    lines = [
        START,
        "| family | config class | pairing | layout | result |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(EXPECTED):
        e = EXPECTED[name]
        pairing = e.pairing + (" (clockwise)" if e.clockwise else "")
        parts = [f"rotary {e.rotary_dim}/16" if e.rotary_dim != 16 else ""]
        if e.nope:
            parts.append("NoPE layers " + ",".join(map(str, sorted(e.nope))))
        if e.skipped:
            parts.append("no attention in " + ",".join(map(str, sorted(e.skipped))))
        layout = "; ".join(p for p in [*parts, e.note] if p) or "standard RoPE"
        lines.append(
            f"| `{name}` | `{FAMILIES[name][0]}` | {pairing} | {layout} | analysed, equals the "
            "reference |"
        )
    for name, why in sorted(REFUSED.items()):
        lines.append(f"| `{name}` | `DeepseekV3Config` | - | {why} | refused in one line |")
    lines.append(END)
    return "\n".join(lines)


def docs_block(text: str) -> str | None:
    """The families block of a docs page, or None."""
    m = re.search(re.escape(START) + ".*?" + re.escape(END), text, flags=re.S)
    return m.group(0) if m else None


def residuals(models=(), dtypes=("float32", "bfloat16", "float16")) -> str:
    """The worst rotation-fit residual of every family's layers per dtype, beside the fit
    tolerance (10 x the probe's noise level): the margin docs/engine.md quotes; ``models``:
    named models (``rope-lens models``) measured the same way, one row each."""
    import tempfile

    import torch

    from rope_lens.engine.probe import noise_level
    from rope_lens.models import load_model
    from rope_lens.models.tiny import family_model_dir

    torch.set_num_threads(1)
    lines = [
        "| models | dtype | worst fit residual (model, layer) | tolerance | margin |",
        "|---|---|---|---|---|",
    ]

    def row(label: str, dtype: str, named: dict) -> str:
        worst = (0.0, "", -1)
        for name, source in named.items():
            lm = load_model(str(source), device="cpu", dtype=dtype)
            for layer, facts in lm.rope.layer_facts.items():
                worst = max(worst, (float(facts.get("fit_residual", 0.0)), name, layer))
        tol = 10 * noise_level(getattr(torch, dtype))
        return (
            f"| {label} | {dtype} | {worst[0]:.1e} ({worst[1]}, layer {worst[2]}) | "
            f"{tol:.1e} | {tol / max(worst[0], 1e-30):.0f}x |"
        )

    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: family_model_dir(name, Path(tmp) / name) for name in sorted(EXPECTED)}
        for dtype in dtypes:
            lines.append(row(f"{len(folders)} tiny families", dtype, folders))
        for model in models:
            for dtype in dtypes:
                lines.append(row(model, dtype, {model: model}))
    return "\n".join(lines)


if __name__ == "__main__":
    page = Path(__file__).resolve().parents[1] / "docs" / "engine.md"
    if "--residuals" in sys.argv:
        print(residuals(sys.argv[sys.argv.index("--residuals") + 1 :]))
        raise SystemExit
    if "--write" in sys.argv:
        text = page.read_text()
        block = docs_block(text)
        if block is None:
            raise SystemExit(f"{page} has no {START} ... {END} block to replace")
        page.write_text(text.replace(block, doc_table()))
    else:
        print(doc_table())
