"""Brand names and the fuzzy index that matches text read in a photo to them.

Counterfeiters misspell marks on purpose ("Guccci", "Adibas") and OCR confuses look-alike
letters, so a string read in a listing is matched to a brand name by edit distance, after
both are *folded*:

* case and accents removed, and everything but letters and digits dropped ("Hermès" → "hermes");
* look-alike characters mapped to one (``0``→``o``; ``1``, ``i``, ``l``, ``|``, ``!`` → ``l``;
  ``5``, ``$`` → ``s``; ``rn`` → ``m``; ``vv`` → ``w``): those cost nothing.

The allowed distance grows with the name's length (:func:`max_distance`): none up to 4
characters (a one-letter change of a short name is usually another word: "nike" / "bike"),
1 up to 8, 2 beyond, and a misspelling that is itself an ordinary word ("roles" for
"rolex") does not count: ordinary words are the lower-case entries of the system's word list
(``/usr/share/dict/words``, Debian ``wamerican``; ``$COUNTERFEIT_WORDS`` names another), when
there is one. A brand whose name is itself an ordinary word ("Unity", "Boots") is matched, flagged
``ordinary`` (the text signal scores it lower: such a word alone is weak evidence). A string read is compared whole (spaces removed: "MICHAEL KORS"), and by
each word and each pair of adjacent words. Names too generic to identify a brand alone (a stop
list, or names shared by several brands: :func:`generic_names`) are never matched alone.

The index is a deletion neighbourhood (SymSpell): each name's variants with up to its
allowed number of deleted characters are stored, a query's own deletions are looked up, and
the few names found are checked with the true (optimal string alignment) distance.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from index.records import Reference

NAMES_ATTRIBUTE = "names"  # manifest: a brand's names and aliases (list, or "a|b" text)
OCR_ATTRIBUTE = "ocr_text"  # indexing: the text OCR read on a logo reference

# Look-alike characters, after lowercasing; multi-letter confusions first.
_CONFUSIONS = (("rn", "m"), ("vv", "w"), ("0", "o"), ("1", "l"), ("i", "l"), ("|", "l"), ("!", "l"),
               ("5", "s"), ("$", "s"))  # fmt: skip
_SEPARATORS = re.compile(r"[-_./+&]+")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_WORDS = re.compile(r"[^\W_]+|[$|!]+", re.UNICODE)

# Words that identify no brand on their own: product words, sizes, shop and legal words, and
# the words benchmark photos without any brand's name read (see docs/text.md).
def _word_list(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP_WORDS: frozenset[str] = _word_list("""
the and for with from new original authentic genuine official store shop sale made
in of by to a an de la le les du et und der die das el los y co inc ltd llc gmbh sa ag
company group brand brands international global world usa uk eu china italy paris london
new york milano tokyo sport sports classic premium luxury design designs collection edition
limited vintage style fashion home original logo trade mark registered trademark tm
size small medium large xl xxl xs cotton leather wool silk gold silver black white red blue
green yellow pink grey gray brown men women kids baby unisex free shipping price off
quality best top super ultra pro plus max mini one two air star power energy life world
""") | _word_list(
    # read by OCR in the benchmark's logo-free photos (scikit-image's "page": a text page)
    """
    and are background based can coins determine either first grey here histogram
    label let like markers object pixels region segmentation that the these unambiguously
    values zeros
    """
)


def fold(text: str) -> str:
    """Case-, accent- and punctuation-folded text with look-alike characters unified
    (spaces dropped): the form names are compared in.

    Example:
        >>> fold("Hermès"), fold("GUCC1"), fold("Co-rnet")
        ('hermes', 'guccl', 'comet')
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    for a, b in _CONFUSIONS:
        text = text.replace(a, b)
    return _NON_ALNUM.sub("", text)


def words(text: str) -> list[str]:
    """The words of a string read (separators split words)."""
    return [w for w in _WORDS.findall(_SEPARATORS.sub(" ", text)) if w]


def default_names(brand: str) -> tuple[str, ...]:
    """A brand's name derived from its id: separators as spaces ("the_north-face" → "the north face")."""
    name = " ".join(_SEPARATORS.sub(" ", brand).split())
    return (name,) if name else ()


def names_attribute(value: Any) -> tuple[str, ...]:
    """A manifest's ``names`` value as names: a list, or one text with ``|`` or ``;`` between names."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).replace(";", "|").split("|")
    return tuple(s for s in (str(v).strip() for v in items) if s)


def reference_names(ref: Reference) -> tuple[str, ...]:
    """Names one reference contributes to its brand: the manifest's and its logo's text."""
    return names_attribute(ref.attributes.get(NAMES_ATTRIBUTE)) + names_attribute(ref.attributes.get(OCR_ATTRIBUTE))


def brand_names_of(references: Iterable[Reference]) -> dict[str, tuple[str, ...]]:
    """Each brand's names: its id with separators as spaces, then its references' names."""
    found: dict[str, dict[str, None]] = {}
    for ref in references:
        names = found.setdefault(ref.brand, dict.fromkeys(default_names(ref.brand)))
        names.update(dict.fromkeys(reference_names(ref)))
    return {brand: tuple(names) for brand, names in found.items()}


def max_distance(length: int) -> int:
    """Edits allowed between a folded name of ``length`` characters and a string read."""
    if length <= 4:
        return 0
    return 1 if length <= 8 else 2


def osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and
    transpositions of adjacent characters each cost 1."""
    if a == b:
        return 0
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = ca != cb
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def _deletions(word: str, depth: int) -> set[str]:
    found = {word}
    for d in range(1, min(depth, len(word) - 1) + 1):
        for drop in combinations(range(len(word)), d):
            found.add("".join(c for i, c in enumerate(word) if i not in drop))
    return found


WORDS_FILE = "/usr/share/dict/words"


@functools.lru_cache(maxsize=4)
def ordinary_words(path: str | None = None) -> frozenset[str]:
    """Folded lower-case words of a word list (proper nouns such as brand names are
    capitalised there, so they are left out); empty when the file is absent."""
    path = path or os.environ.get("COUNTERFEIT_WORDS") or WORDS_FILE
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return frozenset(fold(w) for w in fh.read().split() if w[:1].islower() and "'" not in w)
    except OSError:
        return frozenset()


def generic_names(names: Mapping[str, Iterable[str]], *, max_brands: int = 2) -> frozenset[str]:
    """Folded names and words that cannot identify a brand alone: the stop list, and any
    word found in the names of more than ``max_brands`` brands."""
    brands_of: dict[str, set[str]] = {}
    for brand, brand_names in names.items():
        for name in brand_names:
            for word in {fold(w) for w in words(name)}:
                brands_of.setdefault(word, set()).add(brand)
    shared = {w for w, brands in brands_of.items() if len(brands) > max_brands}
    return frozenset({fold(w) for w in STOP_WORDS} | shared)


@dataclass(frozen=True)
class NameMatch:
    """A string read that matches a brand's name."""

    brand: str
    name: str  # the brand's name as registered
    read: str  # the part of the text read that matched
    distance: int
    ordinary: bool = False  # the name is itself an ordinary word ("unity", "boots")


class BrandNameIndex:
    """Brand names (several per brand) searchable by misspelled, OCR-confused text."""

    def __init__(
        self, names: Mapping[str, Iterable[str]], *, extra_generic: Iterable[str] = (),
        ordinary: frozenset[str] | None = None,
    ) -> None:
        """``ordinary``: ordinary words, which never match a brand by a misspelling
        (default: :func:`ordinary_words`)."""
        self.ordinary = ordinary_words() if ordinary is None else frozenset(fold(w) for w in ordinary)
        names = {brand: tuple(dict.fromkeys(n for n in ns if n and n.strip())) for brand, ns in names.items()}
        self.generic = generic_names(names) | {fold(w) for w in extra_generic}
        self.names = names
        self._keys: dict[str, list[tuple[str, str]]] = {}  # folded name -> (brand, name)
        self._deletes: dict[str, set[str]] = {}  # deletion variant -> folded names
        for brand, brand_names in names.items():
            for name in brand_names:
                key = fold(name)
                if len(key) < 3 or key in self.generic:
                    continue  # "hp", "one": too short or too generic to count alone
                self._keys.setdefault(key, []).append((brand, name))
                for variant in _deletions(key, max_distance(len(key))):
                    self._deletes.setdefault(variant, set()).add(key)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, read: str) -> list[NameMatch]:
        """Brand names within their allowed distance of one folded string, closest first."""
        query = fold(read)
        if len(query) < 3 or query in self.generic:
            return []
        found: dict[str, int] = {}
        for variant in _deletions(query, 2):
            for key in self._deletes.get(variant, ()):
                if key in found or abs(len(key) - len(query)) > max_distance(len(key)):
                    continue
                distance = osa_distance(query, key)
                if distance <= max_distance(len(key)) and not (distance and query in self.ordinary):
                    found[key] = distance
        matches = [NameMatch(brand, name, read, d, key in self.ordinary)
                   for key, d in found.items() for brand, name in self._keys[key]]  # fmt: skip
        return sorted(matches, key=lambda m: (m.distance, -len(m.name), m.brand))

    def match_text(self, text: str) -> list[NameMatch]:
        """Brand names in a line of text read: the whole line, each word and each pair of
        adjacent words are looked up; each brand's closest match (longest on a tie) kept."""
        parts = words(text)
        pieces = [text] if len(parts) > 1 else []
        pieces += [" ".join(parts[i : i + 2]) for i in range(len(parts) - 1)] + parts
        best: dict[str, NameMatch] = {}
        for piece in dict.fromkeys(pieces):
            for m in self.lookup(piece):
                prior = best.get(m.brand)
                if prior is None or (m.distance, -len(fold(m.read))) < (prior.distance, -len(fold(prior.read))):
                    best[m.brand] = m
        return sorted(best.values(), key=lambda m: (m.distance, m.brand))
