"""From an :class:`~rope_lens.request.AnalysisRequest` to a saved table: check, load,
tokenize, run one analysis, check the numbers, save, summarise.

Every analysis module in ``rope_lens.analyses.ANALYSES`` exposes
``analyze(lm, make_batches, layers, options, progress) -> DataFrame`` and
``summarize(df) -> str``. ``make_batches()`` returns a fresh iterator of batches, so analyses
that need two passes (e.g. ablations: baseline and ablated) can have them.

Order matters for reliability: everything that can be checked without a model (options, the
output folder's writability, the prompts) is checked first; the output folder is locked for the
whole run; a saved table is reused only when its identity matches and it reads back valid; NaN
or infinite numbers are never saved; an interrupt flushes the resume checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rope_lens.analyses.registry import SPECS
from rope_lens.errors import OutputError
from rope_lens.request import AnalysisRequest, default_results_dir, parse_layers, slug

log = logging.getLogger(__name__)

__all__ = ["run_analysis", "run_request", "slug", "default_results_dir", "parse_layers"]

# Columns that hold measurements and may never be NaN (infinities are refused in any column
# but a wavelength): declared once, in each analysis' registered spec.
MEASURED = {name: s.measured for name, s in SPECS.items() if s.measured}


def default_threads() -> int:
    """Half the CPUs this process may use, at most 8: torch's default of one thread per core
    is slower on a shared machine (2.5x on a busy 2-core box)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n // 2))


def set_threads(threads: int | None) -> None:
    import torch

    torch.set_num_threads(threads or default_threads())


def check_writable(folder: Path) -> None:
    """Fail before any work when results could not be saved into ``folder``.

    Raises:
        OutputError: ``folder`` is a file, or cannot be created or written.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {folder} is a file, not a folder; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputError(
            f"cannot write results to {folder} ({reason}); choose another --out"
        ) from err


def load_for(req: AnalysisRequest):
    """Load the request's model (``backend`` is passed on only when asked for)."""
    from rope_lens.errors import ModelNotFoundError, RopeLensError
    from rope_lens.models import load_model

    kw: dict[str, Any] = {}
    if req.backend is not None:
        kw["backend"] = req.backend
    if getattr(req, "offload", False):  # rope_lens.models.placement
        kw["offload"] = True
    try:
        return load_model(
            req.model,
            device=req.device,
            dtype=req.dtype,
            revision=req.revision,
            trust_remote_code=req.trust_remote_code,
            **kw,
        )
    except RopeLensError:
        raise
    except Exception as err:  # corrupt files raise JSON, safetensors, tokenizers errors...
        raise ModelNotFoundError(load_failure(req.model, err)) from err


def load_failure(model: str, err: Exception) -> str:
    """One line for a model that failed to load, naming the cause: code the model needs from
    its repository, a corrupt or incomplete file, or (anything else) the error itself.
    "Corrupt" is said only for errors that reading a damaged file raises."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(". ")
    what = f"cannot load {model}: {type(err).__name__}: {first}"
    if "custom code" in str(err) or "trust_remote_code" in str(err):
        return (
            f"cannot load {model}: it needs code from its repository (a tokenizer or model "
            "class transformers does not have), and rope-lens runs none unless "
            "--trust-remote-code is given: pass it only for a repository you trust"
        )
    if _unreadable_file(err):
        return (
            f"{what}. Its files look corrupt or incomplete: re-download or reconvert it "
            "(delete its cached folder), or for a training run resume it or use an intact "
            "checkpoint (--debug shows the traceback)"
        )
    return f"{what} (--debug shows the traceback)"


def _unreadable_file(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a file that cannot be parsed: JSON, safetensors,
    a tokenizer file, a truncated or non-UTF-8 file."""
    import json
    import struct
    import zipfile

    names = ("SafetensorError", "HeaderTooLarge", "InvalidHeaderDeserialization")
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (json.JSONDecodeError, UnicodeDecodeError, EOFError, struct.error)):
            return True
        if isinstance(seen, zipfile.BadZipFile) or type(seen).__name__ in names:
            return True
        if type(seen).__module__.startswith(("safetensors", "tokenizers")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def run_analysis(args: Any, lm=None) -> int:
    """CLI entry: ``args`` is an ``argparse.Namespace`` (or anything with the request's
    attributes). ``lm``: an already loaded model for ``args.model`` (several analyses in one
    process load it once; its device and dtype win over ``args``)."""
    req = args if isinstance(args, AnalysisRequest) else AnalysisRequest.from_namespace(args)
    return run_request(req, lm)


def run_request(req: AnalysisRequest, lm=None) -> int:
    """Run ``req`` and save its table; 0 when saved or already up to date."""
    from rope_lens import distributed
    from rope_lens.lock import folder_lock, new_folders

    req.validate()
    distributed.init(req.device)  # data-parallel under torchrun / accelerate launch (else no-op)
    out_dir = req.out_dir
    created = new_folders(out_dir)  # a refused run removes them again (rope_lens.lock)
    try:
        check_writable(out_dir)
        # Data-parallel: rank 0 holds the folder lock for all ranks (see rope_lens.distributed).
        with distributed.main_only(folder_lock(out_dir, f"analyze {req.analysis}", created)):
            from rope_lens import atomic

            if distributed.is_main():
                atomic.remove_stale(out_dir, ".*.tmp")  # left by a killed write; we hold the lock
            distributed.barrier()
            return _run_locked(req, out_dir, lm)
    except BaseException:
        for p in created:  # check_writable made them, and failed before the lock was taken
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _run_locked(req: AnalysisRequest, out_dir: Path, lm) -> int:
    import importlib

    from rope_lens import corpus, distributed, identity, inputs, io
    from rope_lens.analyses import ANALYSES
    from rope_lens.errors import InputError
    from rope_lens.extract import check_layers

    start = time.time()
    set_threads(req.threads)
    # Larger than memory (rope_lens.corpus): HF datasets folders, parquet, arrow, big jsonl
    # are read lazily and tokenized into a file; everything else as before.
    lazy = corpus.open_texts(req.prompts, req.limit)
    texts = lazy if lazy is not None else inputs.load_texts(req.prompts, req.limit)  # fail fast
    layer_request = parse_layers(req.layers)
    if lm is None:
        lm = load_for(req)
    layers = check_layers(lm, layer_request)
    window = min(req.max_len, lm.max_context)
    if req.max_len > lm.max_context:
        log.warning(
            "--max-len %d exceeds %s's context %d; using %d",
            req.max_len,
            lm.name,
            lm.max_context,
            lm.max_context,
        )
    use_bos = not req.no_bos
    has_bos = use_bos and lm.bos_token_id is not None
    seqs = corpus.tokenize_any(
        lm.tokenizer,
        texts,
        lm.bos_token_id,
        window,
        bos=use_bos,
        max_tokens=req.max_tokens,
        count_bos=req.count_bos,
    )

    make_batches = inputs.batch_factory(
        seqs, req.batch_size, lm.tokenizer.pad_token_id, has_bos, req.count_bos, req.max_tokens
    )

    name = req.analysis
    module = importlib.import_module(ANALYSES[name])
    table = out_dir / f"{req.table_name}.parquet"
    inputs_sha = getattr(seqs, "sha256", None) or io.hash_tokens(seqs)  # token files: hashed once
    model_id = identity.model_identity(lm.folder, lm.revision)
    numeric = {**req.numeric_options(), "layers": layers, "dtype": str(lm.dtype)}
    fields = identity.identity_fields(model_id, name, numeric, inputs_sha)
    ident = identity.digest(fields)
    meta = {
        **lm.metadata(),
        "folder": model_id["folder"],
        "weights_sha256": model_id["weights"],
        "analysis": name,
        "prompts": str(req.prompts),
        "n_texts": len(seqs),
        "token_window": window,
        "bos_prepended": has_bos,
        "bos_counted": bool(req.count_bos and has_bos),
        "max_tokens": req.max_tokens,
        "layers": layers,
        "inputs_sha256": inputs_sha,
        "identity": ident,
        "identity_fields": fields,
        "options": req.numeric_options(),
    }
    measured = MEASURED.get(name)
    if table.exists() and not req.force:
        why = io.reusable(table, fields, measured)
        if why is None:
            print(
                f"{table} is up to date (same model, weights, inputs and options); --force recomputes it"
            )
            return 0
        log.warning("recomputing %s: %s", table, why)
    n_batches = (len(seqs) + req.batch_size - 1) // req.batch_size
    options = req.analysis_options()
    # Partial reductions are checkpointed here so an interrupted run resumes, not restarts;
    # the checkpoint is keyed by the result's identity, never reused for anything else.
    options["checkpoint"] = distributed.per_rank(out_dir / f".{req.table_name}.partial.safetensors")
    options["inputs_sha256"] = ident
    options["checkpoint_key"] = ident
    try:
        df = module.analyze(
            lm,
            make_batches,
            layers,
            options,
            progress=req.progress and sys.stderr.isatty(),
            total=n_batches,
        )
    except KeyboardInterrupt:
        _report_interrupt()
        raise
    if df.empty:
        raise InputError("the analysis produced no rows (were all tokens excluded?)")
    io.check_finite(df, measured, f"{name} on {lm.name}")
    meta["seconds"] = round(time.time() - start, 2)
    meta["world_size"] = distributed.world()  # data-parallel: processes that shared the batches
    if not distributed.is_main():  # data-parallel: rank 0 alone writes the one table
        return 0
    path = io.save_table(df, table, meta)
    print(module.summarize(df))
    print(f"saved {len(df):,} rows to {path} (+ .json copy) in {meta['seconds']:.1f} s")
    return 0


def _report_interrupt() -> None:
    from rope_lens.resume import flush_all

    kept = flush_all()
    for line in kept:
        print(f"kept {line}; rerun the same command to resume", file=sys.stderr)
    if not kept:
        print(
            "no partial result to keep (this analysis does not checkpoint, or had not "
            "finished a batch)",
            file=sys.stderr,
        )
