"""Heads, frequency profiles and rotation ablations on the packaged real models -> docs/findings.md.

    nice -n 10 python analyses/findings.py [--models smollm2-135m gemma3-270m] [--seqs 16]
        [--seq-len 256] [--ablation-seqs 8] [--reuse] [--out docs/findings.md]

Per model: one pass over packed offline-Wikipedia text for head scores, q/k spectra and the
apostrophe search; Cauchy-Schwarz tables (Tables 3-5) for the strongest diagonal and
previous-token heads on a short prompt; then rotation ablations on *different* (held-out) wiki
text: rotation-free sweeps over the m lowest and m highest chunks of every layer, and
mean / zero ablations of the lowest and highest quarter. Tables are saved under
results/findings/<model>/ (``--reuse`` rebuilds the doc from them); every number in the doc
comes from them, and each claim's verdict from the rules in ``rope_lens.analyses.claims``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from rope_lens import atomic, inputs  # noqa: E402
from rope_lens.analyses import (  # noqa: E402
    ablation,
    apostrophe,
    claims,
    decompose,
    heads,
    per_token,
    profiles,
)
from rope_lens.analyses.band_norms import BandNormReducer  # noqa: E402
from rope_lens.extract import SiteTap, reducer_hooks, run_batches  # noqa: E402
from rope_lens.request import default_results_dir  # noqa: E402

PROMPT = "I'm sure it's the book you'd like to read, isn't it? We'll see."
FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)


def pack(lm, n_seqs: int, seq_len: int, skip_texts: int) -> list[list[int]]:
    """``n_seqs`` rows of exactly ``seq_len`` tokens (BOS + wiki leads joined by blank lines),
    starting at wiki text ``skip_texts`` (so profile and ablation text do not overlap)."""
    stream: list[int] = []
    used = 0
    for text in inputs.load_texts("wiki")[skip_texts:]:
        stream += lm.tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]
        used += 1
        if len(stream) >= n_seqs * (seq_len - 1):
            break
    body = seq_len - 1
    rows = [[lm.bos_token_id] + stream[i * body : (i + 1) * body] for i in range(n_seqs)]
    return rows, skip_texts + used


def maker(lm, seqs, batch_size):
    pad = lm.tokenizer.pad_token_id
    return lambda: inputs.batches(seqs, batch_size, pad, True)


def compute(name: str, args, folder: Path) -> None:
    from rope_lens.models import load_model

    lm = load_model(name, device="cpu")
    layers = list(range(lm.n_layers))
    n = lm.head_dim // 2
    t0 = time.time()
    seqs, next_text = pack(lm, args.seqs, args.seq_len, 0)
    bands = BandNormReducer(lm, layers, kinds="qk")
    scores = heads.HeadScoreReducer(lm, layers, spread=True)  # mean_distance below
    apos = apostrophe.ApostropheReducer(lm, layers)
    # One pass feeds all three, on either backend (native taps or TransformerLens hooks).
    if lm.backend == "native":
        plug: dict = {"taps": [SiteTap([bands]), scores, apos]}
    else:
        plug = {"hooks": reducer_hooks(lm, [bands]) + scores.hooks() + apos.hooks()}
    total = -(-len(seqs) // 4)
    run_batches(lm, maker(lm, seqs, 4)(), total=total, desc=f"{name} profiles", **plug)
    prof = profiles.join(bands.to_frame(), scores.to_frame())
    prof.to_parquet(folder / "profiles.parquet")
    # Wiki leads have few contractions: add the Shakespeare quotes and the prompt.
    short = inputs.tokenize(lm.tokenizer, [*inputs.load_texts(), PROMPT], lm.bos_token_id, 256)
    run_batches(lm, maker(lm, short, 4)(), last_layer=layers[-1], progress=False, **apos.plug())
    apos_df = apos.to_frame()
    apos_df.to_parquet(folder / "apostrophe.parquet")
    print(f"{name}: profiles in {time.time() - t0:.0f} s")

    ph = profiles.per_head(prof)
    # The strongest head of each positional class (the strongest candidate if none passes).
    best = []
    for cls, score in (("diagonal", "diag_score"), ("previous-token", "prev_score")):
        pool = ph[ph.head_class == cls] if (ph.head_class == cls).any() else ph
        best.append(pool.sort_values(score).iloc[-1])
    batch = next(maker(lm, inputs.tokenize(lm.tokenizer, [PROMPT], lm.bos_token_id, 64), 1)())
    cs = pd.concat(
        [
            per_token.cs_table(
                per_token.head_token_frame(lm, batch, [int(r.layer)], [int(r["head"])])
            )
            for r in best
        ]
    )
    cs.to_parquet(folder / "cauchy_schwarz.parquet")
    # App. E.1: which chunks make the best apostrophe candidate prefer BOS over other keys.
    cand = apos_df.iloc[0]
    dec = decompose.decompose(lm, batch, [int(cand.layer)], [int(cand["head"])])
    decompose.bos_channels(dec, top=3).to_parquet(folder / "bos_channels.parquet")

    held_out, _ = pack(lm, args.ablation_seqs, args.seq_len, next_text)
    every = tuple(layers)
    configs = []
    for side in ("low", "high"):
        for m in sorted({max(1, round(n * f)) for f in FRACTIONS}):
            if side == "high" and m == n:
                continue  # the same band as low m = n
            lo, hi = (n - m, n) if side == "low" else (0, m)
            configs.append(ablation.Ablation("rotation-free", lo, hi, every, sweep=side))
    low, high = (n - n // 4, n), (0, n // 4)
    configs += [
        ablation.Ablation("mean", *low, every),
        ablation.Ablation("mean", *low, every, spare_first=True),
        ablation.Ablation("zero", *low, every),
        ablation.Ablation("mean", *high, every),
        ablation.Ablation("zero", *high, every),
    ]
    t0 = time.time()
    abl = ablation.run_ablations(
        lm,
        maker(lm, held_out, args.ablation_batch),
        configs,
        total=-(-len(held_out) // args.ablation_batch),
    )
    abl.to_parquet(folder / "ablation.parquet")
    print(f"{name}: {len(configs)} ablations in {time.time() - t0:.0f} s")


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------


def md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def model_section(name: str, folder: Path) -> tuple[str, list[claims.Verdict]]:
    prof = pd.read_parquet(folder / "profiles.parquet")
    apos = pd.read_parquet(folder / "apostrophe.parquet")
    cs = pd.read_parquet(folder / "cauchy_schwarz.parquet")
    abl = pd.read_parquet(folder / "ablation.parquet")
    ph = profiles.per_head(prof)
    n = int(prof.chunk.max()) + 1
    losses = ablation.loss_table(abl)
    out = [f"## {name}\n"]
    counts = ph.head_class.value_counts()
    out.append(
        f"{len(ph)} heads, {int(prof.n_queries.iloc[0]):,} counted queries per layer, {n} "
        "frequency chunks per head. Heads per class (threshold 1/2): "
        + ", ".join(f"{c} **{int(counts.get(c, 0))}**" for c in heads.CLASSES)
        + ".\n"
    )
    cols = [
        "layer",
        "head",
        "layer_type",
        "head_class",
        "diag_score",
        "prev_score",
        "sink_score",
        "mean_distance",
        "q_high_share",
        "q_low_share",
        "k_high_share",
        "k_low_share",
        "q_peak_chunk",
        "k_peak_chunk",
    ]
    top = pd.concat(
        [
            ph[ph.head_class.isin(claims.POSITIONAL)],
            ph.sort_values("diag_score").tail(3),
            ph.sort_values("prev_score").tail(3),
        ]
    ).drop_duplicates(["layer", "head"])
    out.append("### Positional heads and the strongest candidates\n")
    out.append(md_table(top.sort_values(["layer", "head"])[cols]) + "\n")
    out.append("### Frequency profile per head class\n")
    out.append(
        "Shares of the summed chunk norm in the highest / lowest quarter of the frequencies "
        "(flat spectrum: 0.25 / 0.25); mean log10 frequency in rad/token, norm-weighted.\n"
    )
    out.append(md_table(profiles.class_table(prof).reset_index()) + "\n")
    pos_heads = ph[ph.head_class.isin(claims.POSITIONAL)]
    if len(pos_heads):
        out.append(
            f"Peak chunk (largest mean norm; 0 = highest frequency, {n - 1} = lowest) of the "
            "positional heads: "
            + ", ".join(
                f"L{r.layer}H{r.head} q {r.q_peak_chunk} / k {r.k_peak_chunk}"
                for r in pos_heads.itertuples()
            )
            + f"; median peak over all heads: q {ph.q_peak_chunk.median():.0f}, "
            f"k {ph.k_peak_chunk.median():.0f}.\n"
        )
    per_layer = claims.layer_high_share(ph)
    out.append("Mean high-frequency share (q and k) per layer:\n")
    out.append(
        md_table(pd.DataFrame([per_layer.round(3).to_dict()]).rename(columns=lambda c: f"L{c}"))
        + "\n"
    )
    out.append("### Apostrophe-head search (Fig 7)\n")
    out.append(
        f"{int(apos.n_after.iloc[0])} queries follow a token holding an apostrophe; "
        f"{int(apos.apostrophe_like.sum())} head(s) are apostrophe-like (after_apos and "
        "others_sink both >= 1/2). Best candidates:\n"
    )
    out.append(
        md_table(
            apos.head(5)[
                ["layer", "head", "after_apos", "others_sink", "others_prev", "apostrophe_score"]
            ]
        )
        + "\n"
    )
    bos = pd.read_parquet(folder / "bos_channels.parquet")
    if len(bos):
        r = bos.iloc[0]
        out.append(
            f"Logit decomposition of the best candidate (L{int(r.layer)}H{int(r['head'])}) on "
            f"{PROMPT!r}: the chunks that most favour the BOS key over the others (mean "
            "contribution to key 0 minus mean to keys >= 1, queries >= 1):\n"
        )
        out.append(md_table(bos[["chunk", "to_bos", "to_others", "bos_minus_others"]]) + "\n")
    out.append(f"### Cauchy-Schwarz tables (Tables 3-5) on {PROMPT!r}\n")
    for (layer, head), sub in cs.groupby(["layer", "head"], sort=False):
        cls = ph[(ph.layer == layer) & (ph["head"] == head)].head_class.iloc[0]
        sub = sub.head(8)
        t = pd.DataFrame(
            {"row": ["token", "upper bound", "diagonal", "previous-token", "prev bound"]}
        )
        for r in sub.itertuples():
            t[str(r.pos)] = [
                repr(r.token),
                f"{r.upper_bound:.2f}",
                f"{r.diag_logit:.2f}",
                f"{r.prev_logit:.2f}",
                f"{r.prev_bound:.2f}",
            ]
        out.append(f"Layer {layer} head {head} ({cls}); logits times 1/sqrt(d):\n")
        out.append(md_table(t) + "\n")
    out.append("### Rotation ablations on held-out text (every layer, every head)\n")
    out.append(
        f"Baseline loss {losses.loss.iloc[0]:.4f} nats/token over {int(losses.n_targets.iloc[0]):,} "
        "targets. `low` = the m lowest-frequency chunks made rotation-free (inference-time "
        "p-RoPE with p = 1 - m/n), `high` = the m highest. Positional heads: mean change of "
        "their own score (diag for diagonal, prev for previous-token heads).\n"
    )
    pos = abl[abl.base_class.isin(claims.POSITIONAL)]
    own = pos.d_diag_score.where(pos.base_class == "diagonal", pos.d_prev_score)
    keys = ["ablation", "sweep", "band_lo", "band_hi", "spare_first"]
    survival = own.groupby([pos[k] for k in keys]).mean().rename("positional_own_score_change")
    table = losses.merge(survival.reset_index(), on=keys, how="left")
    table["m"] = table.band_hi - table.band_lo
    show = table[
        [
            "ablation",
            "sweep",
            "spare_first",
            "m",
            "band_lo",
            "band_hi",
            "loss",
            "delta_loss",
            "positional_own_score_change",
        ]
    ]
    out.append(md_table(show, ".4f") + "\n")
    verdicts = [
        claims.positional_high(ph),
        claims.low_dominant(ph),
        claims.edge_layers_high(ph),
        claims.semantic_low_bands(losses, n),
        claims.truncation_harmless(losses, n),
        claims.apostrophe_head(apos),
        claims.diagonal_near_bound(cs, ph),
        claims.previous_dominates(cs, ph),
    ]
    return "\n".join(out), verdicts


def write_doc(models: list[str], root: str, args, out: Path) -> None:
    sections, verdicts = [], {}
    for name in models:
        text, v = model_section(name, default_results_dir(name, root))
        sections.append(text)
        verdicts[name] = v
    command = (
        f"nice -n 10 python analyses/findings.py --models {' '.join(models)} --seqs {args.seqs} "
        f"--seq-len {args.seq_len} --ablation-seqs {args.ablation_seqs}"
    )
    weights = "\n".join(f"- `{name}`: {provenance(name)}" for name in models)
    lines = [
        "# Findings: heads, frequency profiles and rotation ablations\n",
        f"Generated by this command (every number below comes from it):\n\n```bash\n{command}\n```\n",
        f"Weights (not the papers' full-precision base models):\n\n{weights}\n",
        "CPU, fp32. Profiles and head classes: "
        f"{args.seqs} x {args.seq_len} tokens of packed offline Wikipedia leads (BOS first, "
        "BOS queries not counted); ablations: the next "
        f"{args.ablation_seqs} x {args.seq_len} tokens of the same source (held out from the "
        "profile pass). Small budgets: read differences of a few 0.01 nats/token with care. "
        "Verdict rules are fixed in `rope_lens/analyses/claims.py`.\n",
        "## The paper's claims\n",
        "| claim | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for i, v0 in enumerate(verdicts[models[0]]):
        cells = [f"**{verdicts[m][i].verdict}**: {verdicts[m][i].evidence}" for m in models]
        lines.append(f"| {v0.claim} | " + " | ".join(cells) + " |")
    lines.append("")
    atomic.write_text(out, "\n".join(lines + sections) + kept_by_hand(out))  # parents made
    print(f"wrote {out}")


def provenance(name: str) -> str:
    from rope_lens.models.registry import REGISTRY

    return REGISTRY[name].provenance if name in REGISTRY else f"local folder or hub id {name}"


HAND_WRITTEN = "## Across three families"


def kept_by_hand(out: Path) -> str:
    """The hand-written cross-model section of an existing ``out`` (from its heading to the
    end), so that regenerating the per-model sections does not delete it."""
    if not out.exists():
        return ""
    text = out.read_text()
    at = text.find(HAND_WRITTEN)
    return "" if at < 0 else "\n" + text[at:]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    p.add_argument("--seqs", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--ablation-seqs", type=int, default=8)
    p.add_argument("--ablation-batch", type=int, default=2)
    p.add_argument("--results", default="results/findings")
    p.add_argument("--reuse", action="store_true", help="rebuild the doc from saved tables")
    p.add_argument("--out", default="docs/findings.md")
    p.add_argument("--threads", type=int, default=2, help="torch threads (shared CPU boxes)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.models:
        folder = default_results_dir(name, args.results)  # results/findings/<name>(-<hash>)
        if args.reuse and (folder / "ablation.parquet").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        compute(name, args, folder)
    write_doc(args.models, args.results, args, Path(args.out))


if __name__ == "__main__":
    main()
