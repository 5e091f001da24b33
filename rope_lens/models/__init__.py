"""Model registry, weight resolution and loading (the only home of HF/TL loading code)."""

from rope_lens.models.registry import DEFAULT_MODEL, REGISTRY, ModelEntry, suggest

__all__ = ["DEFAULT_MODEL", "REGISTRY", "ModelEntry", "suggest", "load_model", "LoadedModel"]


def __getattr__(name: str):
    # Lazy: importing torch/transformers costs seconds; `rope-lens models` should not pay it.
    if name in ("load_model", "LoadedModel"):
        from rope_lens.models import load

        return getattr(load, name)
    raise AttributeError(name)
