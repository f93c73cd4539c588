"""Search by words: a query such as ``"red striped dresses"`` parsed against the catalog's label vocabulary,
and items ranked by the labels they store and the probabilities the model gave them.

Plain Python, no model and no download: the vocabulary is the labels the catalog already knows.

* :class:`Vocabulary` holds the labels: category names (leaves), every taxonomy node above them (from the
  dotted ``category_path`` s: ``upper``, ``upper.knitwear``, ...), attribute names and, when the model's
  labels have them, attribute groups.  :meth:`Vocabulary.parse` reads a query case- and
  punctuation-insensitively (``T-Shirts`` = ``t shirt``), singular or plural, with simple synonyms
  (:data:`SYNONYMS`: tee = t-shirt, trousers = pants, sweater = jumper, ...), longest phrase first
  (``long sleeve`` before ``long``).  An attribute may be named with its group (``red colour``,
  ``knit fabric``) or, where that is unambiguous, without the group's word (``mini`` = ``mini_length``,
  ``crew neck`` = ``crew_neckline``).  The answer says which words matched which label, which were
  filler (:data:`STOP_WORDS`) and which were not understood, with close labels for those.
* :func:`rank` orders items for the matched terms: first by how many terms the item's **stored** labels
  match exactly (its category under the term's node, the attribute in its list), then by the sum of the
  log-probabilities the model gave the terms (``extra.prediction``: the top-5 ``category_scores`` and the
  predicted attributes' scores; a node's probability is the sum over the categories under it).
  A probability the stored prediction does not give is estimated: an unlisted category shares the
  probability left over by the top-5 evenly; a stored label without a prediction counts as certain (1), an
  absent one as :data:`FLOOR`.  :func:`matches_all` is the filter "the stored labels match every term".
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Groups of interchangeable phrases (any member finds a label spelt with any other member).
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("tee", "t shirt", "tshirt", "tee shirt"),
    ("trousers", "pants", "slacks"),
    ("sweater", "jumper", "pullover"),
    ("hoodie", "hoody", "hooded sweatshirt"),
    ("button down", "buttondown", "button up", "shirt", "dress shirt"),
    ("tank", "tank top", "singlet", "camisole"),
    ("coat", "overcoat"),
    ("jacket", "blazer"),
    ("dress", "gown", "frock"),
    ("jumpsuit", "boilersuit"),
    ("romper", "playsuit"),
    ("sneakers", "trainers"),
    ("bag", "handbag", "purse"),
    ("colour", "color"),
    ("grey", "gray"),
    ("neckline", "neck"),
    ("striped", "stripes", "stripy", "stripey"),
    ("dotted", "dots", "polka dots", "spots", "spotted", "spotty"),
    ("checked", "check", "checkered", "chequered", "plaid", "tartan", "gingham"),
    ("floral", "flowers", "flowery", "flowered"),
    ("solid", "plain"),
    ("long sleeve", "long sleeved"),
    ("short sleeve", "short sleeved"),
    ("hooded", "hood"),
    ("knit", "knitted"),
    ("upper", "upper body"),
    ("lower", "lower body"),
    ("full", "full body"),
    ("loose", "baggy", "oversized"),
    ("tight", "skinny", "fitted"),
)
#: Words that say nothing about the labels; reported as ignored, never as not understood.
STOP_WORDS = frozenset(
    "a an the and or with without in of for on to my me some any all that this is are i want looking find "
    "show like similar item items garment garments clothing clothes piece pieces kind type style no".split())
FLOOR = 1e-4  # the probability of a term the item neither stores nor was predicted to have
MIN_PROBABILITY = 0.1  # rank(): an item no stored label matches is listed when the model gives a term this much
KINDS = ("category", "node", "attribute")  # a leaf category, a taxonomy node above the leaves, an attribute
_SOURCE_LITERAL, _SOURCE_SYNONYM, _SOURCE_GROUP, _SOURCE_SHORT = range(4)  # how an alias was made (best first)


# -- words ---------------------------------------------------------------------------------------------------
def fold(text: str) -> str:
    """Lower case without accents or apostrophes: ``"Men's Crêpe"`` -> ``"mens crepe"``."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"['\u2019\u02bc]", "", text.casefold())


def singular(word: str) -> str:
    """A word's singular form, for comparing (not for display): dresses -> dress, shorts -> short,
    hoodies / hoodie -> hoody, jeans -> jean; short words and ``-ss`` / ``-us`` / ``-is`` words stay."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("ie") and len(word) > 4:  # hoodie = hoodies, beanie = beanies (both -> -y)
        return word[:-2] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words_of(text: str) -> list[str]:
    """The words of a text, folded (case, accents, punctuation): ``"T-Shirt, red!"`` -> ``[t, shirt, red]``."""
    return re.findall(r"[^\W_]+", fold(text))


def key_of(text: str) -> tuple[str, ...]:
    """The comparison key of a phrase: its words in singular form."""
    return tuple(singular(w) for w in words_of(text))


_SYNONYM_KEYS = [tuple(key_of(p) for p in group) for group in SYNONYMS]


# -- the vocabulary --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One label a query can name.

    ``kind``: ``category`` (a leaf: items store its name), ``node`` (a taxonomy node above the leaves: every
    category under it) or ``attribute``.  ``name``: the category name, the node's last path part or the
    attribute name.  ``paths``: dotted taxonomy paths it covers (several when nodes of one name sit under
    different parents, e.g. ``upper.outerwear`` and ``full.outerwear``).  ``categories``: the folded names of
    the leaf categories under it (a leaf: itself).  ``group``: an attribute's group."""

    kind: str
    name: str
    paths: tuple[str, ...] = ()
    categories: frozenset[str] = frozenset()
    group: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.name, "paths": [p.split(".") for p in self.paths],
                "group": self.group}


@dataclass
class Match:
    words: str  # the query's words that named the term (folded), e.g. "t shirts"
    term: Term

    def as_dict(self) -> dict[str, Any]:
        return {"words": self.words, **self.term.as_dict()}


@dataclass
class Parsed:
    """What :meth:`Vocabulary.parse` understood of a query."""

    text: str
    matches: list[Match] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # words that name no label (folded)
    ignored: list[str] = field(default_factory=list)  # filler words (STOP_WORDS)
    suggestions: dict[str, list[str]] = field(default_factory=dict)  # unknown word -> close label names

    @property
    def terms(self) -> list[Term]:
        """The distinct terms matched, in query order."""
        return list(dict.fromkeys(m.term for m in self.matches))

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "matched": [m.as_dict() for m in self.matches], "unknown": list(self.unknown),
                "ignored": list(self.ignored), "suggestions": {k: list(v) for k, v in self.suggestions.items()}}


class Vocabulary:
    """The labels a catalog knows, indexed for :meth:`parse`.

    ``categories``: (name, dotted path or None) pairs (the model's labels and the categories items store);
    ``attributes``: (name, group or None) pairs; ``num_categories``: how many categories the model
    predicts over (spreads the probability the top-5 leave to the unlisted ones; default: the leaves given)."""

    def __init__(self, categories: Iterable[tuple[str, str | None]], attributes: Iterable[tuple[str, str | None]] = (),
                 num_categories: int | None = None):
        leaves: dict[str, tuple[str, set[str]]] = {}  # folded name -> (name, paths)
        for name, path in categories:
            if not name or not str(name).strip():
                continue
            entry = leaves.setdefault(fold(name), (str(name), set()))
            if path:
                entry[1].add(str(path))
        groups: dict[str, tuple[str, str | None]] = {}  # folded name -> (name, group): the first spelling wins
        for name, group in attributes:
            if not name or not str(name).strip():
                continue
            known = groups.get(fold(name))
            if known is None or (known[1] is None and group):
                groups[fold(name)] = (known[0] if known else str(name), str(group) if group else None)
        self.num_categories = int(num_categories or len(leaves) or 1)
        self.terms: list[Term] = []
        self._index: dict[tuple[str, ...], tuple[tuple[int, int], Term | None]] = {}  # alias -> (rank, term)
        self._short: dict[tuple[str, ...], set[Term]] = {}  # aliases without the group's word
        self._by_path: dict[str, set[str]] = {}  # node path -> folded leaf names under it

        for folded, (name, paths) in leaves.items():
            for path in paths:
                parts = path.split(".")
                for depth in range(1, len(parts)):
                    self._by_path.setdefault(".".join(parts[:depth]), set()).add(folded)
        node_names = {fold(p.split(".")[-1]) for p in self._by_path}
        for folded, (name, paths) in sorted(leaves.items()):
            if not paths and folded in node_names:  # a node stored as an item's category (a hedged answer): the node
                continue
            term = Term("category", name, tuple(sorted(paths)), frozenset({folded}))
            self.terms.append(term)
            self._add(name, term, 0)
            for path in paths:  # the path's last part, when it is spelt otherwise ("tee" of "Tee shirt")
                self._add(path.split(".")[-1], term, 0)
        nodes: dict[str, set[str]] = {}  # folded node name -> its paths
        for path in self._by_path:
            nodes.setdefault(fold(path.split(".")[-1]), set()).add(path)
        for folded, paths in sorted(nodes.items()):
            under = frozenset().union(*(self._by_path[p] for p in paths))
            term = Term("node", min(paths).split(".")[-1], tuple(sorted(paths)), under)
            self.terms.append(term)
            self._add(term.name, term, 1)
        for name, group in sorted(groups.values()):
            term = Term("attribute", name, group=group)
            self.terms.append(term)
            self._add(name, term, 2)
            if group and not group.isdigit():
                self._add_grouped(name, group, term)
        for alias, terms in self._short.items():  # "mini" of mini_length: only when one attribute has it
            if len(terms) == 1:
                self._put(alias, (_SOURCE_SHORT, 2), next(iter(terms)))
        self._longest = max((len(a) for a in self._index), default=1)

    # -- building ----------------------------------------------------------------------------------------
    def _add(self, phrase: str, term: Term, kind_rank: int) -> None:
        key = key_of(phrase)
        if not key:
            return
        self._put(key, (_SOURCE_LITERAL, kind_rank), term)
        for variant in _variants(key):
            self._put(variant, (_SOURCE_SYNONYM, kind_rank), term)

    def _add_grouped(self, name: str, group: str, term: Term) -> None:
        """``red colour`` / ``colour red`` for red of group colour; ``mini`` for mini_length of group length."""
        own = key_of(name)
        spellings = [g for g in [key_of(group), *_variants(key_of(group))] if g]
        inside = [g for g in spellings if _contains(own, g)]
        for g in inside:  # the group's word is part of the name: the rest alone names it
            rest = _remove(own, g)
            if rest and (len(rest) > 1 or len(rest[0]) > 1) and not set(rest) <= STOP_WORDS:
                for r in [rest, *_variants(rest)]:
                    self._short.setdefault(r, set()).add(term)
        for g in spellings if not inside else []:  # else the name with its group before or after it
            for alias in [own, *_variants(own)]:
                self._put(alias + g, (_SOURCE_GROUP, 2), term)
                self._put(g + alias, (_SOURCE_GROUP, 2), term)

    def _put(self, alias: tuple[str, ...], rank: tuple[int, int], term: Term) -> None:
        """Keep the best-ranked term of an alias; two different terms of the same rank: ambiguous (dropped)."""
        known = self._index.get(alias)
        if known is None or rank < known[0]:
            self._index[alias] = (rank, term)
        elif rank == known[0] and known[1] is not None and known[1] != term:
            self._index[alias] = (rank, None)

    # -- reading a query ---------------------------------------------------------------------------------
    def parse(self, text: str) -> Parsed:
        """Which words of ``text`` name which labels (longest phrase first), which are filler, which unknown."""
        words = words_of(text)
        keys = [singular(w) for w in words]
        out = Parsed(str(text))
        i = 0
        while i < len(words):
            for j in range(min(len(words), i + self._longest), i, -1):
                hit = self._index.get(tuple(keys[i:j]))
                if hit is not None and hit[1] is not None:
                    out.matches.append(Match(" ".join(words[i:j]), hit[1]))
                    i = j
                    break
            else:
                if words[i] in STOP_WORDS or keys[i] in STOP_WORDS:
                    out.ignored.append(words[i])
                else:
                    out.unknown.append(words[i])
                    close = self.suggest(words[i]) if len(out.suggestions) < 10 else []
                    if close:
                        out.suggestions[words[i]] = close
                i += 1
        return out

    def suggest(self, word: str, n: int = 3) -> list[str]:
        """Label names spelt close to ``word`` (difflib), best first."""
        names: dict[str, str] = {}
        for alias, (_, term) in self._index.items():
            if term is not None:
                names.setdefault(" ".join(alias), term.name)
        close = difflib.get_close_matches(singular(fold(word)), list(names), n=n * 2, cutoff=0.7)
        return list(dict.fromkeys(names[c] for c in close))[:n]

    # -- probabilities -----------------------------------------------------------------------------------
    def probability(self, term: Term, item: Mapping[str, Any]) -> float | None:
        """The model's probability of ``term`` for ``item`` from its stored prediction (None: no prediction)."""
        prediction = (item.get("extra") or {}).get("prediction") or item.get("prediction") or {}
        if term.kind == "attribute":
            listed = {fold(a.get("name", "")): float(a.get("score") or 0) for a in prediction.get("attributes") or []
                      if isinstance(a, Mapping)}
            return listed.get(fold(term.name))  # not listed: under the threshold, no score kept
        scores = [s for s in prediction.get("category_scores") or [] if isinstance(s, Mapping)]
        if not scores:
            return None
        listed = {fold(s.get("name", "")): float(s.get("score") or 0) for s in scores}
        mass = sum(p for n, p in listed.items() if n in term.categories)
        unlisted = len(term.categories - listed.keys())
        if unlisted and self.num_categories > len(listed):
            mass += unlisted * max(0.0, 1.0 - sum(listed.values())) / (self.num_categories - len(listed))
        return min(mass, 1.0)


def _variants(key: tuple[str, ...], limit: int = 32) -> list[tuple[str, ...]]:
    """The key with synonymous phrases swapped in (every combination, up to ``limit``), the key itself excluded."""
    seen = {key}
    todo = [key]
    while todo and len(seen) < limit:
        current = todo.pop()
        for group in _SYNONYM_KEYS:
            for member in group:
                if not _contains(current, member):
                    continue
                for other in group:
                    if other != member:
                        new = _replace(current, member, other)
                        if new not in seen:
                            seen.add(new)
                            todo.append(new)
    seen.discard(key)
    return sorted(seen)


def _find(seq: tuple[str, ...], part: tuple[str, ...]) -> int:
    for i in range(len(seq) - len(part) + 1):
        if seq[i:i + len(part)] == part:
            return i
    return -1


def _contains(seq: tuple[str, ...], part: tuple[str, ...]) -> bool:
    return bool(part) and _find(seq, part) >= 0


def _replace(seq: tuple[str, ...], part: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    i = _find(seq, part)
    return seq[:i] + new + seq[i + len(part):]


def _remove(seq: tuple[str, ...], part: tuple[str, ...]) -> tuple[str, ...]:
    return _replace(seq, part, ())


# -- items -----------------------------------------------------------------------------------------------------
def stores(term: Term, item: Mapping[str, Any]) -> bool:
    """Whether ``item``'s stored labels match ``term`` exactly: the attribute is in its list; its category is
    the term's (by name or path) or lies under the term's node (a stored node name counts too)."""
    if term.kind == "attribute":
        return fold(term.name) in {fold(a) for a in item.get("attributes") or []}
    category, path = fold(item.get("category") or ""), item.get("category_path")
    if category and (category == fold(term.name) or category in term.categories):
        return True
    if path:
        return any(path == p or (term.kind == "node" and path.startswith(p + ".")) for p in term.paths)
    return False


def matches_all(item: Mapping[str, Any], terms: Sequence[Term]) -> bool:
    """The filter of a words query: the item's stored labels match every term (no terms: nothing matches)."""
    return bool(terms) and all(stores(t, item) for t in terms)


@dataclass(frozen=True)
class Ranked:
    item_id: int
    exact: int  # terms the stored labels match
    terms: int  # terms in the query
    log_probability: float  # sum over the terms of log p (see the module docstring)

    def as_dict(self) -> dict[str, Any]:
        return {"exact": self.exact == self.terms, "matched_terms": self.exact, "terms": self.terms,
                "log_probability": round(self.log_probability, 4),
                "probability": round(math.exp(self.log_probability), 6)}


def score(item: Mapping[str, Any], terms: Sequence[Term], vocabulary: Vocabulary) -> tuple[int, float, bool]:
    """(terms the stored labels match, sum of log-probabilities, whether the model gives some term at least
    MIN_PROBABILITY) of one item."""
    exact, total, likely = 0, 0.0, False
    for term in terms:
        stored = stores(term, item)
        p = vocabulary.probability(term, item)
        exact += stored
        likely = likely or (p is not None and p >= MIN_PROBABILITY)
        total += math.log(max(p if p is not None else (1.0 if stored else FLOOR), FLOOR))
    return exact, total, likely


def rank(items: Iterable[Mapping[str, Any]], terms: Sequence[Term], vocabulary: Vocabulary) -> list[Ranked]:
    """Items (dicts with ``item_id``, ``category``, ``category_path``, ``attributes``, ``extra``) for the terms,
    best first: most terms stored exactly, then the highest summed log-probability, then the lowest id.
    Items no stored label matches are kept when the model gives some term MIN_PROBABILITY; no terms: []."""
    if not terms:
        return []
    out = []
    for item in items:
        exact, logp, likely = score(item, terms, vocabulary)
        if exact or likely:
            out.append(Ranked(int(item["item_id"]), exact, len(terms), logp))
    out.sort(key=lambda r: (-r.exact, -r.log_probability, r.item_id))
    return out


def vocabulary_from_labels(labels: Mapping[str, Any], extra_categories: Iterable[tuple[str, str | None]] = (),
                           extra_attributes: Iterable[str] = ()) -> Vocabulary:
    """The vocabulary of a model's label dict (``categories``, ``category_paths``, ``attributes``,
    ``attribute_groups`` + ``group_names``) plus labels the catalog's items store."""
    names = list(labels.get("categories") or [])
    paths = list(labels.get("category_paths") or [])
    categories = [(n, paths[i] if len(paths) == len(names) else None) for i, n in enumerate(names)]
    attributes = list(labels.get("attributes") or [])
    groups = list(labels.get("attribute_groups") or [])
    group_names = {str(k): str(v) for k, v in (labels.get("group_names") or {}).items()}
    pairs = [(a, group_names.get(str(groups[j]), None) if len(groups) == len(attributes) else None)
             for j, a in enumerate(attributes)]
    return Vocabulary([*categories, *extra_categories], [*pairs, *((a, None) for a in extra_attributes)],
                      num_categories=len(names) or None)


__all__ = ["FLOOR", "MIN_PROBABILITY", "STOP_WORDS", "SYNONYMS", "Match", "Parsed", "Ranked", "Term", "Vocabulary",
           "fold", "key_of", "matches_all", "rank", "score", "singular", "stores", "vocabulary_from_labels",
           "words_of"]
