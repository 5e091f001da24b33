"""Where the weights come from is shown wherever a number is: the README and docs model
tables, every table's sidecar, the report's header and docs/findings.md. The packaged
SmolLM2-135M is the *Instruct* model dequantized from a 4-bit Q4_1 GGUF; a reader comparing it
with papers on full-precision base models must be told."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rope_lens.models.registry import REGISTRY, provenance_of

ROOT = Path(__file__).parents[2]


def test_packaged_models_say_instruct_or_base_and_their_quantization():
    smol, gemma, qwen = (REGISTRY[n] for n in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"))
    assert "SmolLM2-135M-Instruct, instruction-tuned" in smol.provenance
    assert "Q4_1" in smol.provenance and "Q4_K_M" in gemma.provenance
    assert "base" in gemma.provenance and "instruction-tuned" in qwen.provenance
    assert "original weights" in REGISTRY["gemma-7b"].provenance
    for entry in REGISTRY.values():  # the GGUF's name agrees with the stated quantization
        if entry.gguf_file:
            assert entry.quantization and entry.quantization.lower() in entry.gguf_file.lower()
            assert ("instruct" in entry.gguf_file.lower()) == (entry.variant == "instruct")


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_model_tables_state_every_models_provenance(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    for entry in REGISTRY.values():
        assert f"| `{entry.name}` | {entry.provenance} |" in text, entry.name


def test_sidecars_and_the_report_header_carry_it(tiny_lm, tmp_path):
    from rope_lens.commands import report
    from rope_lens.io import save_table
    from tests.viz_frames import band_norm_frame

    lm = tiny_lm("llama")
    assert lm.metadata()["provenance"] == f"local folder {lm.folder}"
    packaged = dataclasses.replace(lm, name="smollm2-135m", entry=REGISTRY["smollm2-135m"])
    meta = packaged.metadata()
    assert meta["provenance"] == REGISTRY["smollm2-135m"].provenance
    assert provenance_of({"model": "gemma3-270m"}) == REGISTRY["gemma3-270m"].provenance  # old
    save_table(band_norm_frame(model="smollm2-135m"), tmp_path / "band_norm", meta)
    import argparse

    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.run(parser.parse_args([str(tmp_path)])) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert (
        "<td><b>weights</b></td><td>HuggingFaceTB/SmolLM2-135M-Instruct, instruction-tuned" in page
    )


def test_findings_doc_names_the_weights_of_each_model():
    text = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    for name in ("smollm2-135m", "gemma3-270m"):
        assert f"`{name}`: {REGISTRY[name].provenance}" in text
