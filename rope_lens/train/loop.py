"""One training loop for CPU, one GPU and many GPUs (accelerate: DDP, or FSDP for big configs).

``train(cfg, run_dir)`` prepares the data, builds the model for ``cfg.encoding``, resumes from
the newest checkpoint in ``run_dir`` if there is one, trains with AdamW + warmup/cosine and
gradient accumulation (bf16 autocast on GPU, SDPA attention, optional ``torch.compile``), logs
metrics, checkpoints atomically every ``ckpt_every`` steps and finishes with the validation
perplexities at 1x, 2x and 4x the training length, written to ``results.json``.

Exact resume: model, optimizer, scheduler, RNG and the data position (epoch, offset) are all
restored, so on CPU a killed-and-resumed run reproduces the uninterrupted loss curve.
Multi-GPU: ``accelerate launch -m rope_lens.cli train ...``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rope_lens.errors import CheckpointError, InputError, Terminated
from rope_lens.io import write_json
from rope_lens.train import checkpoint as ckpt_io
from rope_lens.train.config import RESUMABLE_CHANGES, TrainConfig
from rope_lens.train.data import BatchSampler, pack, prepare_data
from rope_lens.train.evaluate import evaluate_splits
from rope_lens.train.metrics import MetricsLog, lr_factor
from rope_lens.train.model import build_model, count_parameters

RESULTS = "results.json"
PROGRESS_LINES_S = 30.0  # seconds between progress lines when stderr is not a terminal
logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a call to :func:`train` produced."""

    run_dir: Path
    step: int
    completed: bool
    final: dict[str, dict[str, float]] = field(default_factory=dict)


def _accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator, FullyShardedDataParallelPlugin

    cuda = torch.cuda.is_available()
    mp = ("bf16" if cuda else "no") if cfg.mixed_precision == "auto" else cfg.mixed_precision
    fsdp = None
    if cfg.fsdp and cuda:  # FSDP needs GPUs; on CPU the flag is ignored
        fsdp = FullyShardedDataParallelPlugin(
            auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["GemmaDecoderLayer"],
            state_dict_type="FULL_STATE_DICT",
            use_orig_params=True,
        )
    return Accelerator(cpu=not cuda, mixed_precision=mp, fsdp_plugin=fsdp)


def _check_resume(saved: dict[str, Any], cfg: TrainConfig, ckpt: Path) -> None:
    now = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as the JSON file has them
    # A field added since the checkpoint was written reads as its default (the old behaviour).
    saved = {**json.loads(json.dumps(TrainConfig().to_dict())), **saved}
    diff = sorted(
        k
        for k in set(saved) | set(now)
        if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)
    )
    if diff:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"checkpoint {ckpt} is from a different run ({detail}); "
            "use a new --out directory or the checkpoint's settings"
        )


def _check_data(saved: dict[str, Any], now: dict[str, Any], ckpt: Path) -> None:
    """The checkpoint was trained on the same text: the tokenizer is trained on it, so a
    single changed character can give token ids another meaning."""
    if saved.get("fingerprint") != now.get("fingerprint"):
        raise CheckpointError(
            f"checkpoint {ckpt} was trained on other data (fingerprint "
            f"{saved.get('fingerprint')!r}, the data now {now.get('fingerprint')!r}; source "
            f"{now.get('source')!r}): its tokenizer and token ids belong to that text; restore "
            "the data it was trained on, or use a new --out directory"
        )


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, matrices: set[str]) -> Any:
    """AdamW; weight decay on matrices (incl. the tied embedding), not on norm gains.

    ``matrices`` are parameter names taken before wrapping: FSDP flattens shards to 1-D, so
    ``ndim`` cannot be read after ``prepare``.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        clean = name.replace("_fsdp_wrapped_module.", "").replace("_orig_mod.", "")
        clean = clean.removeprefix("module.")
        (decay if clean in matrices else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _is_fsdp(model: Any) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, FSDP)


def _optim_state(model: Any, optimizer: Any, fsdp: bool) -> dict[str, Any]:
    if fsdp:  # gather the sharded state on every rank (FULL_STATE_DICT); untested without GPUs
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.optim_state_dict(model, optimizer)
    return optimizer.state_dict()


def _load_optim_state(model: Any, optimizer: Any, state: dict[str, Any], fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        state = FSDP.optim_state_dict_to_load(model, optimizer, state)
    optimizer.load_state_dict(state)


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    data_root: str | Path = "runs/cache",
    resume: bool = True,
    build_data: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) one model; see the module docstring and :func:`_train`.

    The run folder is locked for the whole run (a second ``train`` into it fails at once). A
    finished run with the same settings is a no-op that returns its saved results. SIGTERM or
    Ctrl-C finish the current step, save a checkpoint, and then stop the run.
    """
    from rope_lens.lock import folder_lock

    run_dir = Path(run_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    lock = folder_lock(run_dir, "train") if main else contextlib.nullcontext()
    with lock:
        done = _finished(cfg, run_dir) if resume else None
        if done is not None:
            return done
        with _deferred_signals() as stop:
            return _train(
                cfg,
                run_dir,
                data_root=data_root,
                resume=resume,
                build_data=build_data,
                stop_after=stop_after,
                progress=progress,
                stop=stop,
            )


def _finished(cfg: TrainConfig, run_dir: Path) -> TrainResult | None:
    """The saved result of a finished run with ``cfg``'s settings (None: not finished)."""
    path = run_dir / RESULTS
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # torn by hand: train and evaluate again
    if not res.get("completed") or int(res.get("step", -1)) != cfg.steps:
        return None
    _check_resume(res.get("train_config", {}), cfg, path)
    return TrainResult(run_dir, int(res["step"]), completed=True, final=res.get("final", {}))


class _Stop:
    """Set by SIGTERM / SIGINT while training; the loop checkpoints and stops at a step end."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def _deferred_signals():
    stop = _Stop()

    def handler(signum, frame) -> None:
        # Ctrl-C twice stops now; a repeated SIGTERM (the kernel may deliver a parent-death
        # signal more than once) only confirms the stop at the step end.
        if stop.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signum = stop.signum or signum

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class _Run:
    """Everything one training run holds between steps (built by :func:`_setup`)."""

    cfg: TrainConfig
    run_dir: Path
    accelerator: Any
    data: Any
    train_seqs: Any
    sampler: BatchSampler
    model: Any
    optimizer: Any
    scheduler: Any
    sharded: bool
    log: MetricsLog
    info: dict[str, Any]
    n_micro: int
    step: int = 0

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def eval_kw(self) -> dict[str, Any]:
        return {
            "micro_batch_tokens": self.cfg.micro_batch_size * self.cfg.seq_len,
            "accelerator": self.accelerator,
        }


def _setup(
    cfg: TrainConfig, run_dir: Path, data_root: str | Path, resume: bool, build_data: bool
) -> _Run:
    """Data, model, optimizer and scheduler, resumed from the newest checkpoint if any."""
    encoding = cfg.positional_encoding  # parsed once, by the config
    encoding.inv_freq(cfg.model.head_dim)  # validates head_dim before any heavy work
    if cfg.deterministic:  # thread-count independent numbers (see TrainConfig.deterministic)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
    accelerator = _accelerator(cfg)
    world = accelerator.num_processes
    n_micro = cfg.batch_size // cfg.micro_batch_size
    if n_micro % world:
        raise InputError(f"{n_micro} micro-batches per step do not split over {world} processes")
    with accelerator.main_process_first():
        data = prepare_data(
            cfg.dataset, cfg.data_source, cfg.model.vocab_size, data_root, build=build_data
        )
    if data.meta["tokenizer_vocab"] > cfg.model.vocab_size:
        raise InputError(f"tokenizer has {data.meta['tokenizer_vocab']} tokens > vocab_size")
    train_seqs = pack(data.streams["train"], cfg.seq_len)  # (n, seq_len)
    sampler = BatchSampler(len(train_seqs), cfg.batch_size, cfg.seed)

    latest = ckpt_io.find_latest(run_dir) if resume else None
    if not resume and ckpt_io.find_latest(run_dir) is not None:
        raise InputError(f"{run_dir} already has checkpoints; resume it or choose a new --out")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, encoding, cfg.max_eval_len)
    state: dict[str, Any] = {}
    if latest is not None:
        state = ckpt_io.load_trainer_state(latest)
        _check_resume(state["info"]["train_config"], cfg, latest)
        _check_data(state["info"].get("data", {}), data.meta, latest)
        ckpt_io.load_weights(model, latest)
    if cfg.activation_checkpointing:
        model.gradient_checkpointing_enable()
    data.tokenizer.model_max_length = cfg.max_eval_len
    n_params = count_parameters(model)

    matrices = {n for n, p in model.named_parameters() if p.ndim >= 2}
    model = accelerator.prepare(model)
    sharded = _is_fsdp(model)  # FSDP only when launched on several GPUs with fsdp=true
    optimizer = accelerator.prepare(_optimizer(model, cfg, matrices))
    # Not accelerate-prepared: an AcceleratedScheduler steps once per process per step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        functools.partial(
            _lr, warmup=cfg.warmup_steps, total=cfg.steps, min_ratio=cfg.min_lr_ratio
        ),
    )
    run = _Run(
        cfg=cfg,
        run_dir=run_dir,
        accelerator=accelerator,
        data=data,
        train_seqs=train_seqs,
        sampler=sampler,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        sharded=sharded,
        log=MetricsLog(run_dir, enabled=accelerator.is_main_process),
        info={
            "train_config": cfg.to_dict(),
            "encoding": encoding.name,
            "params": n_params,
            "data": data.meta,
            "threads": torch.get_num_threads(),  # CPU numbers depend on it (docs/training.md)
        },
        n_micro=n_micro,
    )
    if latest is not None:
        _resume(run, state)
    if run.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "train_config.json", cfg.to_dict())
    return run


def _resume(run: _Run, state: dict[str, Any]) -> None:
    """Optimizer, scheduler, data position, RNG and metrics as the checkpoint left them."""
    _load_optim_state(run.model, run.optimizer, state["optimizer"], run.sharded)
    run.scheduler.load_state_dict(state["scheduler"])
    run.sampler.load_state_dict(state["sampler"])
    ckpt_io.set_rng_state(state["rng"])
    run.step = int(state["step"])
    run.log.truncate(run.step)


def _step(run: _Run, fwd: Any) -> tuple[Any, Any, float]:
    """One optimizer step over ``n_micro`` micro-batches (gradients synced on the last one).

    Returns the summed micro-batch losses (a tensor), the gradient norm and the lr used.
    """
    acc, cfg = run.accelerator, run.cfg
    world, rank = acc.num_processes, acc.process_index
    micro = run.sampler.next_batch().view(run.n_micro, cfg.micro_batch_size)[rank::world]
    loss_sum = torch.zeros((), device=acc.device)
    for k, idx in enumerate(micro):
        batch = run.train_seqs[idx].to(acc.device, dtype=torch.long)
        sync = k == len(micro) - 1  # all-reduce gradients only on the last micro-step
        with contextlib.nullcontext() if sync else acc.no_sync(run.model):
            with acc.autocast():
                loss = fwd(input_ids=batch, labels=batch).loss / len(micro)
            acc.backward(loss)
        loss_sum += loss.detach().float()
    grad_norm = acc.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return loss_sum, grad_norm, lr


def _evaluate(run: _Run, lengths: Any, splits: Any = None) -> dict[str, dict[str, float]]:
    """Validation (and held-out) perplexities at multiples of the training length, logged."""
    cfg = run.cfg
    kw = {"splits": splits} if splits is not None else {}
    rows = evaluate_splits(
        run.model, run.data.streams, cfg.seq_len, cfg.eval_tokens, lengths, **kw, **run.eval_kw()
    )
    for key, row in rows.items():
        split, mult = key.split("@")
        run.log.log("eval", step=run.step, split=split, length_multiple=int(mult[:-1]), **row)
    return rows


def _save(run: _Run) -> None:
    """Checkpoint the run at its current step (every process takes part; main writes)."""
    acc = run.accelerator
    st = {
        "optimizer": _optim_state(run.model, run.optimizer, run.sharded),
        "scheduler": run.scheduler.state_dict(),
        "sampler": run.sampler.state_dict(),
    }
    full = acc.get_state_dict(run.model) if run.sharded else None
    if run.main:
        ckpt_io.save_checkpoint(
            run.run_dir,
            run.step,
            model=acc.unwrap_model(run.model),
            tokenizer=run.data.tokenizer,
            trainer_state=st,
            info=run.info,
            keep=run.cfg.keep_checkpoints,
            state_dict=full,
        )
    acc.wait_for_everyone()


def _train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    data_root: str | Path = "runs/cache",
    resume: bool = True,
    build_data: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
    stop: _Stop | None = None,
) -> TrainResult:
    """Train (or resume) one model; see the module docstring.

    Args:
        cfg: the run's configuration (encoding and seed included).
        run_dir: output folder; becomes a standard HF model folder.
        data_root: folder of tokenized caches.
        resume: continue from the newest checkpoint in ``run_dir``; if False and checkpoints
            exist, refuse rather than overwrite them.
        build_data: build a missing data cache (else raise InputError).
        stop_after: return after this many steps, as if killed (tests, benchmarks).
        progress: show a progress bar on the main process.
        stop: set by a signal: checkpoint at the end of the current step and stop.

    Raises:
        InputError: bad encoding, config or data. CheckpointError: a corrupt or mismatched
            checkpoint in ``run_dir``.
    """
    from rope_lens.progress import TokenBar

    run_dir = Path(run_dir)
    run = _setup(cfg, run_dir, data_root, resume, build_data)
    fwd = torch.compile(run.model) if cfg.compile else run.model
    # In tokens (global, all ranks): every step is tokens_per_step packed tokens, no padding.
    bar = TokenBar(
        "train",
        total=cfg.steps * cfg.tokens_per_step,
        initial=run.step * cfg.tokens_per_step,
        show=run.main and progress,
        lines_every=PROGRESS_LINES_S,  # off a TTY (nohup, CI): a plain line now and then
    )
    t0 = time.perf_counter()
    tokens_seen = run.step * cfg.tokens_per_step
    window = (t0, tokens_seen)  # (time, tokens) at the previous log row, for tokens/s
    run.model.train()
    while run.step < cfg.steps:
        loss_sum, grad_norm, lr = _step(run, fwd)
        step = run.step
        tokens_seen += cfg.tokens_per_step
        bar.update(cfg.tokens_per_step)
        if step % cfg.log_every == 0 or step == cfg.steps:
            loss_val = run.accelerator.reduce(loss_sum, reduction="mean").item()
            now = time.perf_counter()
            rate = (step * cfg.tokens_per_step - window[1]) / max(now - window[0], 1e-9)
            run.log.log(
                "train",
                step=step,
                loss=loss_val,
                lr=lr,
                grad_norm=float(grad_norm),
                tokens=tokens_seen,
                tokens_per_s=rate,
                elapsed_s=now - t0,
            )
            window = (now, step * cfg.tokens_per_step)
            bar.set_postfix(loss=f"{loss_val:.3f}")
            if not math.isfinite(loss_val):
                raise InputError(f"loss became {loss_val} at step {step}; lower lr")
        if step % cfg.eval_every == 0 and step < cfg.steps:
            _evaluate(run, (1,), splits=("valid",))
        if step % cfg.ckpt_every == 0 or step == cfg.steps or stop:
            _save(run)
        if stop:
            bar.close()
            logger.warning("stopped: checkpoint at step %d saved; rerun to resume", step)
            raise Terminated() if stop.signum == signal.SIGTERM else KeyboardInterrupt()
        if stop_after is not None and step >= stop_after and step < cfg.steps:
            bar.close()
            return TrainResult(run_dir, step, completed=False)
    bar.close()
    final = _evaluate(run, cfg.eval_lengths)
    if run.main:
        results = {
            "completed": True,
            "step": run.step,
            "final": final,
            **run.info,
            "wall_s": time.perf_counter() - t0,
        }
        # Atomic: the grid treats an existing results.json as a finished cell.
        write_json(run_dir / RESULTS, results)
    return TrainResult(run_dir, run.step, completed=True, final=final)


def _lr(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    return lr_factor(step, warmup, total, min_ratio)
