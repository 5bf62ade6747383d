"""The shipped catalog's models that tests can run, chosen by what they are rather than listed: a model or
family added to the catalog is tested without a list here to update."""

from inpaint.catalog import Catalog

CATALOG = Catalog.load()


def offline_inpainters() -> list:
    """Entries that fill a mask and run here without a download: the classical models and the tiny ones (a LoRA
    is its base model's family and is tested on its own)."""
    return [entry for entry in CATALOG.entries() if entry.source_kind in ("builtin", "tiny")
            and not entry.family.selects and not entry.type.is_lora]


def one_model_per_family() -> list[str]:
    """The first offline inpainter of each family, in the catalog's order."""
    chosen: dict[str, str] = {}
    for entry in offline_inpainters():
        chosen.setdefault(entry.family.name, entry.id)
    return list(chosen.values())


def tiny_diffusion_ids() -> list[str]:
    """One tiny model of each diffusion family."""
    return [model_id for model_id in one_model_per_family() if CATALOG.get(model_id).family.denoises]
