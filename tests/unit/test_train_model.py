"""The Gemma training model: NoPE's permutation invariance, HF-folder round trips, sizes."""

import json

import pytest
import torch

from rope_lens.errors import CheckpointError
from rope_lens.train.config import GEMMA_2B, ModelConfig
from rope_lens.train.encodings import get_encoding


def _tiny(n_layers: int = 1) -> ModelConfig:
    # A large init makes attention far from uniform, so position effects are visible.
    return ModelConfig(
        vocab_size=64,
        d_model=32,
        n_layers=n_layers,
        n_heads=2,
        n_kv_heads=1,
        head_dim=16,
        d_ff=48,
        init_std=0.3,
    )


def _build(name: str, n_layers: int = 1, seed: int = 0):
    from rope_lens.train.model import build_model

    torch.manual_seed(seed)
    return build_model(_tiny(n_layers), get_encoding(name), 64).eval()


class TestNoPEPermutation:
    """With no positional signal, the last token attends to the *set* of earlier tokens."""

    def _last_logits(self, model, ids):
        with torch.no_grad():
            return model(input_ids=ids).logits[:, -1]

    def test_nope_last_token_unchanged(self):
        # One layer: with more layers the earlier tokens' own states depend on their causal
        # prefixes, which a permutation changes, so invariance holds only for the first layer.
        model = _build("nope")
        ids = torch.randint(3, 64, (1, 12))
        perm = torch.cat([torch.randperm(11), torch.tensor([11])])
        torch.testing.assert_close(
            self._last_logits(model, ids),
            self._last_logits(model, ids[:, perm]),
            atol=1e-5,
            rtol=1e-5,
        )

    def test_rope_last_token_changes(self):
        model = _build("rope")
        ids = torch.randint(3, 64, (1, 12))
        perm = torch.cat([torch.arange(11).flip(0), torch.tensor([11])])
        diff = (self._last_logits(model, ids) - self._last_logits(model, ids[:, perm])).abs().max()
        assert diff > 1e-2


class TestCheckpointFolder:
    """A saved model is a standard HF folder that records its exact frequencies."""

    @pytest.mark.parametrize("name", ["0.75-rope-reversed", "0.75-rope-partial", "0.25-rope"])
    def test_roundtrip(self, tmp_path, name):
        from transformers import AutoModelForCausalLM

        from rope_lens.train.data import train_tokenizer
        from rope_lens.train.model import load_trained

        model = _build(name, n_layers=2)
        model.save_pretrained(tmp_path)
        train_tokenizer(["a tiny corpus for a tiny tokenizer"] * 4, 300).save_pretrained(tmp_path)
        cfg = json.loads((tmp_path / "config.json").read_text())
        assert cfg["rope_lens_encoding"] == name and len(cfg["rope_lens_inv_freq"]) == 8
        loaded, tok = load_trained(tmp_path)
        ids = torch.randint(3, 64, (2, 10))
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
        assert tok.bos_token_id == 2 and tok.eos_token_id == 1 and tok.pad_token_id == 0
        plain = AutoModelForCausalLM.from_pretrained(tmp_path).model.rotary_emb.inv_freq
        want = get_encoding(name).inv_freq(16).float()
        if get_encoding(name).hf_native:  # proportional: right even without rope_lens
            torch.testing.assert_close(plain, want)
        else:  # no native form: only the patched load is right
            assert not torch.allclose(plain, want)

    def test_missing_folder(self, tmp_path):
        from rope_lens.train.model import load_trained

        with pytest.raises(CheckpointError, match="no config.json"):
            load_trained(tmp_path)


class TestSizes:
    def test_gemma_2b_parameter_count(self):
        """The paper's Gemma 2B shape has Gemma 2B's ~2.51B parameters (tied embeddings)."""
        from rope_lens.train.model import build_model, count_parameters

        model = build_model(GEMMA_2B.model, get_encoding("0.75-rope"), 8192, device="meta")
        n = count_parameters(model)
        assert n["total"] == pytest.approx(2.506e9, rel=0.01)
        assert n["embedding"] == 256_000 * 2048


class TestEvaluation:
    def test_chunked_nll_matches_hf_loss(self):
        """The chunked LM-head NLL used for validation equals HF's own causal-LM loss."""
        from rope_lens.train.evaluate import sequence_nll

        model = _build("0.75-rope", n_layers=2)
        ids = torch.randint(3, 64, (2, 10))
        nll, n = sequence_nll(model, ids, chunk_tokens=5)
        assert n == 18
        with torch.no_grad():
            torch.testing.assert_close(nll / n, model(input_ids=ids, labels=ids).loss)

    def test_every_length_reads_the_same_tokens_of_a_short_split(self):
        """Length generalisation compares lengths on one text: a split shorter than the budget
        is cut to whole sequences of the longest length, at every length."""
        from rope_lens.train.evaluate import evaluate_splits

        model = _build("rope")
        stream = torch.randint(3, 64, (150,))  # budget 1000 > split; 150 is not a multiple of 32
        out = evaluate_splits(model, {"valid": stream}, 8, 1000, (1, 2, 4), micro_batch_tokens=64)
        # n sequences of length L over T tokens predict T - n tokens: T = 128 at every length.
        seen = {k: r["tokens"] + 128 // r["seq_len"] for k, r in out.items()}
        assert seen == {"valid@1x": 128, "valid@2x": 128, "valid@4x": 128}
