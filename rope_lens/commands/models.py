"""`rope-lens models`: list the registry with sizes and offline availability."""

from __future__ import annotations

import argparse

NAME = "models"
HELP = "list known models, their sizes and whether they are available offline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def availability(entry) -> str:
    from rope_lens.models import packaged

    if entry.source == "gguf-package":
        if packaged.is_converted(entry):
            return "ready (converted)"
        return (
            "ready (converts on first use)"
            if packaged.package_installed(entry)
            else f"missing: {packaged._install_hint(entry)}"
        )
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(entry.repo_id, "config.json", revision=entry.revision)
        return "cached" if isinstance(hit, str) else "hub download (needs network)"
    except Exception:  # a broken cache must not break a listing
        return "unknown"


def run(args: argparse.Namespace) -> int:
    import json

    from rope_lens.models.registry import DEFAULT_MODEL, REGISTRY

    rows = [
        {
            "name": e.name,
            "params": e.params,
            "weights_gb": e.weights_gb,
            "source": e.source,
            "repo_id": e.repo_id,
            "license": e.license,
            "available": availability(e),
            "variant": e.variant,
            "quantization": e.quantization,
            "provenance": e.provenance,
            "note": e.note,
        }
        for e in REGISTRY.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<19} {'params':>6} {'GB':>5}  {'available offline':<32} note")
    for r in rows:
        star = "*" if r["name"] == DEFAULT_MODEL else " "
        print(
            f"{r['name']:<18}{star} {r['params']:>6} {r['weights_gb']:>5.1f}  {r['available']:<32} {r['note']}"
        )
        print(f"{'':<26}  weights: {r['provenance']}")
    print("* default. Also accepted: any hub id (org/name) or a local HF folder.")
    return 0
