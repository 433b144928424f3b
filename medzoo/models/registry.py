"""The supported VLM families, listed explicitly (no import-time registration).

Family modules (qwen_vl.py, gemma3.py) define a `Family` each and know nothing of this list;
everything that needs "the family of this model" asks here.
"""

from __future__ import annotations

from medzoo.errors import UnknownName
from medzoo.models.family import Family
from medzoo.models.gemma3 import GEMMA3
from medzoo.models.qwen_vl import QWEN2_5_VL, QWEN2_VL, QWEN3_VL

FAMILIES: dict[str, Family] = {f.name: f for f in (QWEN2_VL, QWEN2_5_VL, QWEN3_VL, GEMMA3)}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise UnknownName(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def family_for_model_type(model_type: str) -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise UnknownName(f"model_type {model_type!r} is not a supported VLM family; supported: {', '.join(known)}")
