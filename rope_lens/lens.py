"""``Lens``: the notebook entry point. One loaded model, any analysis, a DataFrame back.

    from rope_lens import Lens

    lens = Lens("smollm2-135m")
    norms = lens.run("band-norm", prompts="wiki", max_tokens=20_000)
    heads = lens.run("heads", layers=[0, -1])
    text = ["It's a truth universally acknowledged"]
    parts = lens.run("decompose", prompts=text, layers=[3], head=2, query_pos="5")

It does what ``rope-lens analyze`` does minus the files: the same analyses
(``rope_lens.analyses.ANALYSES``), the same options (``head``, ``band``, ``ablation``, ``sweep``,
``query_pos``, ...; see ``rope-lens analyze --help``), the same input conventions (BOS prepended
and not counted, right padding, truncation to the window with one warning). Save a result with
``rope_lens.io.save_table`` or run the CLI when you want the JSON sidecar and resumability.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd

from rope_lens import inputs
from rope_lens.analyses import ANALYSES
from rope_lens.errors import InputError
from rope_lens.extract import check_layers
from rope_lens.inputs import Batch
from rope_lens.models import load_model
from rope_lens.models.load import LoadedModel

Prompts = str | Path | Sequence[str]


class Lens:
    """A loaded model plus the input conventions of the CLI.

    Args:
        model: registry name (``rope-lens models``), hub id or local HF folder; or an already
            loaded ``LoadedModel``.
        device, dtype, revision, trust_remote_code: as for ``rope-lens analyze``.
    """

    def __init__(
        self,
        model: str | LoadedModel = "smollm2-135m",
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.lm = (
            model
            if isinstance(model, LoadedModel)
            else load_model(
                model,
                device=device,
                dtype=dtype,
                revision=revision,
                trust_remote_code=trust_remote_code,
            )
        )

    def __repr__(self) -> str:
        lm = self.lm
        return (
            f"Lens({lm.name!r}: {lm.n_layers} layers, {lm.n_heads} query / {lm.n_kv_heads} KV "
            f"heads, head_dim {lm.head_dim}, {lm.device}, {lm.dtype})"
        )

    def texts(self, prompts: Prompts = "shakespeare", limit: int | None = None) -> list[str]:
        """Built-in source name (``shakespeare``, ``wiki``), a .txt / .jsonl path, or texts."""
        if isinstance(prompts, str | Path):
            return inputs.load_texts(prompts, limit)
        texts = [t for t in prompts if t.strip()]
        if not texts:
            raise InputError("no non-empty prompts given")
        return texts[:limit] if limit else texts

    def batches(
        self,
        prompts: Prompts = "shakespeare",
        max_len: int = 512,
        batch_size: int = 4,
        bos: bool = True,
        count_bos: bool = False,
        max_tokens: int | None = None,
        limit: int | None = None,
    ) -> Callable[[], Iterator[Batch]]:
        """A factory of fresh batch iterators (analyses with two passes call it twice)."""
        lm = self.lm
        seqs = inputs.tokenize(
            lm.tokenizer,
            self.texts(prompts, limit),
            lm.bos_token_id,
            min(max_len, lm.max_context),
            bos=bos,
        )
        has_bos = bos and lm.bos_token_id is not None
        pad = lm.tokenizer.pad_token_id

        def make() -> Iterator[Batch]:
            return inputs.batches(seqs, batch_size, pad, has_bos, count_bos, max_tokens)

        return make

    def run(
        self,
        analysis: str = "band-norm",
        prompts: Prompts = "shakespeare",
        layers: Sequence[int] | None = None,
        *,
        max_len: int = 512,
        batch_size: int = 4,
        bos: bool = True,
        count_bos: bool = False,
        max_tokens: int | None = None,
        limit: int | None = None,
        progress: bool = False,
        **options,
    ) -> pd.DataFrame:
        """Run one analysis and return its table (``layers``: None = all; negatives count
        from the end). Extra keyword options are the CLI's, with underscores."""
        if analysis not in ANALYSES:
            raise InputError(f"unknown analysis {analysis!r}: choose from {', '.join(ANALYSES)}")
        module = importlib.import_module(ANALYSES[analysis])
        make = self.batches(prompts, max_len, batch_size, bos, count_bos, max_tokens, limit)
        return module.analyze(self.lm, make, check_layers(self.lm, layers), options, progress)

    def summarize(self, analysis: str, df: pd.DataFrame) -> str:
        """The CLI's end-of-run summary for a table from :meth:`run`."""
        return importlib.import_module(ANALYSES[analysis]).summarize(df)
