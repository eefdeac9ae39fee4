"""Class labels of a classifier: from what a user types to a class index.

One resolver for every command that takes a class (``visualize class --class``,
``attack classify --target``, label files of ``attack report``), so that a name that
works in one works in all.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from ..errors import ArgumentError


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def resolve_class(categories: Sequence[str] | None, label: str | int) -> int:
    """The index of a class given by index or name.

    Names match forgivingly: case, spaces, punctuation, hyphens and underscores are
    ignored ("golden_retriever" is "golden retriever"), a trailing plural "s" is optional,
    and a name that is one of the words of exactly one class ("retriever" -> "golden
    retriever" is ambiguous, "starfish" is not) matches it. A name shared by several
    classes (ImageNet has two "crane"s) must be given as an index. Unknown and ambiguous
    names raise a one-line ValueError listing the closest classes. Without ``categories``
    only indices are accepted.
    """
    text = str(label).strip()
    if re.fullmatch(r"-?\d+", text):
        index = int(text)
        if index < 0:
            raise ArgumentError(f"class index {index} is negative; indices count from 0")
        if categories is not None and index >= len(categories):
            raise ArgumentError(f"class index {index} is outside 0..{len(categories) - 1}")
        return index
    if categories is None:
        raise ArgumentError(f"label {label!r}: this model has no class names; give a class index")
    wanted = _normal(text)
    if not wanted:
        raise ArgumentError(f"label {label!r} has no letters or digits; give a class name or an index")
    normal = [_normal(c) for c in categories]
    compact = [name.replace(" ", "") for name in normal]  # "jelly fish" is "jellyfish"
    for form in (wanted, wanted.removesuffix("s"), wanted + "s"):
        found = [i for i, name in enumerate(compact) if name == form.replace(" ", "")]
        if len(found) == 1:
            return found[0]
        if found:
            raise ArgumentError(f"label {label!r} names several classes ({', '.join(map(str, found))}); "
                             "give the class index instead")
    containing = [i for i, name in enumerate(normal) if re.search(rf"\b{re.escape(wanted)}s?\b", name)]
    if len(containing) == 1:
        return containing[0]
    if containing:
        options = ", ".join(f"{categories[i]} ({i})" for i in containing[:10])
        raise ArgumentError(f"label {label!r} is ambiguous: {options}; give the full name or the index")
    close = difflib.get_close_matches(wanted, normal, n=5, cutoff=0.6)
    hint = ", ".join(f"{categories[normal.index(c)]} ({normal.index(c)})" for c in close)
    raise ArgumentError(f"unknown label {label!r}" + (f"; closest: {hint}" if hint else "")
                     + f"; give a class name or an index 0..{len(categories) - 1}")
