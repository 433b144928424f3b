"""Answer normalisation and text metrics shared by training's quick eval and the bench."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation.replace(".", "").replace("-", ""))


def normalize(text: str) -> str:
    """Lower-case, drop articles and punctuation (keeping decimal points and hyphens), squeeze spaces."""
    text = text.lower().strip().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    text = text.rstrip(".")
    return " ".join(text.split())
