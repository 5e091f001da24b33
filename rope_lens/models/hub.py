"""Resolve hub ids and local folders to a local snapshot folder.

Hub models go through huggingface-hub's cache (``HF_HOME``/``HF_HUB_CACHE``), honour a pinned
revision and the usual ``HF_TOKEN`` variable, and never run remote code. When the hub cannot
be reached (``HF_HUB_OFFLINE=1`` or no network) and the model is not cached, the error says
how to provide the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from rope_lens.errors import ModelNotFoundError

# Files an analysis needs; large non-safetensors duplicates (.bin, .pth, .gguf) are skipped so
# we never unpickle untrusted weights.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt"]


def is_local_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").exists()


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """Local folder for ``repo_id`` at ``revision``, downloading only when online."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    at = f"@{revision}" if revision else ""
    rev_flag = f" --revision {revision}" if revision else ""
    hint = (
        f"model '{repo_id}{at}' is not in the local Hugging Face cache and the hub is "
        "unreachable: download it on a connected machine with "
        f"`hf download {repo_id}{rev_flag}` (huggingface_hub's CLI) and copy the cache "
        "(HF_HOME), "
        "or pass --model /path/to/a/local/folder"
    )
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=ALLOW_PATTERNS,
            local_files_only=offline,
        )
    except HFValidationError as err:  # before the network: the name cannot be a repo
        raise ModelNotFoundError(
            f"{repo_id!r} is neither a model folder here nor a valid hub id (owner/name, of "
            "letters, digits, '-', '_' and '.'): check the spelling, or the path"
        ) from err
    except LocalEntryNotFoundError as err:
        raise ModelNotFoundError(hint) from err
    except GatedRepoError as err:
        raise ModelNotFoundError(
            f"{repo_id!r} is gated: accept its licence on the hub and set HF_TOKEN"
        ) from err
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(f"no hub repo named {repo_id!r} (or no access to it)") from err
    except OSError as err:  # network failures surface as OSError subclasses
        raise ModelNotFoundError(hint) from err
    if not any(Path(folder).glob("*.safetensors")):
        raise ModelNotFoundError(
            f"{repo_id!r} has no safetensors weights; rope-lens does not load pickled .bin files"
        )
    return Path(folder)


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot folder of ``repo_id`` when it is cached, else None (never
    downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS, local_files_only=True
            )
        )
    except Exception:  # not cached, or not a valid repo id: nothing to check against
        return None
