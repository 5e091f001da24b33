"""Model resolution and the RoPE-parameter safety check."""

import pytest
import torch

from rope_lens.errors import ModelNotFoundError
from rope_lens.models import REGISTRY, suggest
from rope_lens.models.load import resolve_folder
from rope_lens.models.rope_config import rope_layout


def test_suggestions():
    assert suggest("gemma7b")[0] == "gemma-7b" and suggest("llama-3-8b")[0] == "llama-3.1-8b"


def test_registry_knows_the_paper_models():
    assert REGISTRY["gemma-7b"].repo_id == "google/gemma-7b"
    assert REGISTRY["llama-3.1-8b"].repo_id == "meta-llama/Llama-3.1-8B"


def test_offline_uncached_hub_model(tmp_path, monkeypatch):
    """Offline and not cached: one line saying how to provide the weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="hf download google/gemma-7b"):
        resolve_folder("gemma-7b")


def _fake_hub_cache(tmp_path, monkeypatch, source, repo_id, revision="a" * 40):
    """Lay ``source`` out as huggingface-hub's cache would after a download of ``repo_id``."""
    import shutil

    import huggingface_hub._snapshot_download as sd

    cache = tmp_path / "hub"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(sd.constants, "HF_HUB_CACHE", str(cache), raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hub_id_from_a_local_cache(tmp_path, monkeypatch, tiny_dirs):
    """A hub id resolves from a populated HF cache with the hub unreachable."""
    _fake_hub_cache(tmp_path, monkeypatch, tiny_dirs["llama"], "someorg/tiny-llama")
    folder, entry = resolve_folder("someorg/tiny-llama")
    assert entry is None and (folder / "config.json").exists()
    from rope_lens.models import load_model

    lm = load_model("someorg/tiny-llama", device="cpu")
    assert lm.n_layers == 2 and lm.rope.layer_specs[0].theta == 1e5


def test_registry_hub_model_and_revision_pinning(tmp_path, monkeypatch, tiny_dirs):
    """`gemma-7b` goes through the hub cache (here a local copy), honouring --revision."""
    rev = "b" * 40
    _fake_hub_cache(tmp_path, monkeypatch, tiny_dirs["gemma"], "google/gemma-7b", revision=rev)
    folder, entry = resolve_folder("gemma-7b", revision=rev)
    assert entry.name == "gemma-7b" and folder.name == rev
    with pytest.raises(ModelNotFoundError, match="gemma-7b@cccc"):
        resolve_folder("gemma-7b", revision="c" * 40)


def test_frequency_mismatch_uses_the_models_rotation_and_says_so(tiny_lm, caplog):
    """If the config's frequencies ever disagree with the model's own rotation (measured by
    the load-time probe), the model's rotation is what the layout holds, never the config's,
    and the disagreement is logged and recorded for the sidecar, never silent."""
    from rope_lens.engine.probe import probe

    lm = tiny_lm("llama")
    rotary = lm.hf_model.model.rotary_emb
    saved = rotary.inv_freq.clone()

    def layout():
        seen = probe(lm.hf_model, lm.n_layers, 40, lm.device, max_position=1024, vocab_size=99)
        return rope_layout(lm.hf_model.config, False, seen)

    try:
        rotary.inv_freq = saved * 1.5
        edited = layout()
    finally:
        rotary.inv_freq = saved
    want = saved.double() * 1.5
    for layer in range(lm.n_layers):
        assert torch.allclose(edited.layer_specs[layer].inv_freq, want, rtol=1e-6)
        assert edited.layer_facts[layer]["config"].startswith("differs: config gives chunk 0")
    assert "differs" in caplog.text
    assert edited.describe()["measured"]["0"]["config"].startswith("differs")
    fine = layout()
    assert fine.layer_facts[0]["config"] == "agrees"
    assert torch.allclose(fine.layer_specs[0].inv_freq, saved.double(), rtol=1e-6)


def test_training_checkpoint_frequencies_override(tiny_dirs, tmp_path):
    """A checkpoint carrying rope_lens_inv_freq (e.g. p-RoPE) is analysed with exactly those."""
    import json
    import shutil

    from rope_lens import rope
    from rope_lens.models import load_model

    folder = tmp_path / "prope"
    shutil.copytree(tiny_dirs["llama"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    freq = rope.p_rope_inv_freq(10_000.0, 16, 0.75)
    cfg["rope_lens_inv_freq"] = freq.tolist()
    cfg["rope_lens_encoding"] = "0.75-rope"
    (folder / "config.json").write_text(json.dumps(cfg))
    lm = load_model(str(folder), device="cpu")
    torch.testing.assert_close(lm.hf_model.model.rotary_emb.inv_freq, freq.float())
    assert lm.rope.layer_specs[0].rope_type == "0.75-rope"
    assert (lm.rope.layer_specs[0].frequencies() == 0).sum() == 2
