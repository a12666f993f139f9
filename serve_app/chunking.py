"""Semantic chunking core: split a text into sentences with exact offsets, then group sentences into chunks.

Pure Python + numpy (no torch, no Ray): the router calls it with sentence embeddings and token counts it
got from a model deployment.

Sentences (`split_sentences`). A sentence ends:
- after `.`, `!`, `?`, `…` or an ellipsis (`...`), optionally followed by closing quotes or brackets,
  when whitespace (or the end of the text) follows and the next word does not start with a lowercase
  letter. A `.` does not end a sentence after a known abbreviation (`Dr.`, `e.g.`, `vs.`, `Fig.` ...),
  an initial (`J.`), a dotted abbreviation (`U.S.`, `Ph.D.`), or a list number at the start of a line
  (`1.`). Decimals (`3.5`), versions and URLs never break: no whitespace follows their dots;
- after the CJK full stops `。！？` (and `｡`), with any closing quotes, whether or not whitespace follows;
- at a blank line (a paragraph), always;
- at a single line break, unless the next line starts with a lowercase letter (a hard-wrapped sentence
  goes on). Headings, list items and lines of code thus stay apart.
Every sentence is `text[start:end]` with no whitespace at either end; sentences are in order and never
overlap, and only whitespace lies between them, so no character is lost or reordered.

Chunks (`plan_chunks`). The cosine similarity of each pair of adjacent sentences is computed; a chunk
ends where it drops below `threshold` (method "threshold") or below the `percentile`-th percentile of
this document's similarities (method "percentile": percentile 5 breaks at the document's sharpest 5 %
of drops, the default of LangChain's SemanticChunker, stated there as the 95th percentile of distances).
A chunk never holds more than `max_chunk_tokens` tokens (the sum of its sentences' counts): a group over
the budget is split again at its lowest similarity, repeatedly, until every part fits.

A single sentence longer than `max_chunk_tokens` is never merged with its neighbours. Without a
`token_counter` it is kept whole as its own chunk flagged `oversized` (its offsets stay exact; the
caller decides: embed it truncated, or refuse). With a `token_counter` (text -> tokens) it is cut into
character windows that each fit the budget, preferring cuts at whitespace, each window its own chunk
flagged `sentence_split`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["percentile", "threshold"]
DEFAULT_PERCENTILE = 5.0
DEFAULT_THRESHOLD = 0.5


# ---- sentences --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    start: int  # offsets into the original text: text == original[start:end]
    end: int


# Words after which a period does not end the sentence (compared lowercased, without the final ".").
# Words that often end a sentence ("etc.", "Inc.", "no.") are left out, or listed as number prefixes.
ABBREVIATIONS = frozenset(
    {
        # titles and name parts
        "mr", "mrs", "ms", "dr", "prof", "st", "mt", "rev", "hon", "gen", "col", "lt", "sgt", "capt", "cmdr",
        "gov", "sen", "pres", "messrs", "mme", "mlle", "fr",
        # latin and scholarly
        "e.g", "i.e", "cf", "viz", "vs", "al", "approx",
        # references
        "fig", "figs", "eq", "eqs", "vol", "vols", "pp", "ch", "chap", "sect", "refs", "para",
        # misc
        "dept", "univ", "nr", "tel", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
        "dec",
    }
)  # fmt: skip
# Abbreviations only when a number follows: "No. 5", "p. 12", "ca. 1500", "Sec. 3".
NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "p", "ca", "sec", "art", "ref", "tab", "app", "op", "n"})

_CLOSERS = "\"'”’)]}»」』）】》〉"
_LATIN_END = re.compile(r"[.!?…]+[" + re.escape(_CLOSERS) + r"]*(?=\s|$)")
_CJK_END = re.compile(r"[。！？｡]+[" + re.escape(_CLOSERS) + r"]*")
_DOTTED = re.compile(r"^(?:[^\W\d_]{1,2}\.)+[^\W\d_]{1,2}$")  # U.S, e.g, Ph.D, a.m (not www.x.com)
_OPENERS = "\"'“‘([{«"


def split_sentences(text: str) -> list[Sentence]:
    """Sentences of `text` with exact character offsets (see the module's docstring for the rules)."""
    cuts = set()
    for match in _LATIN_END.finditer(text):
        if _latin_end_breaks(text, match.start(), match.end()):
            cuts.add(match.end())
    for match in _CJK_END.finditer(text):
        cuts.add(match.end())
    for pos in _newline_cuts(text):
        cuts.add(pos)

    sentences: list[Sentence] = []
    previous = 0
    for cut in [*sorted(cuts), len(text)]:
        _append_stripped(text, previous, cut, sentences)
        previous = cut
    return sentences


def _append_stripped(text: str, start: int, end: int, out: list[Sentence]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        out.append(Sentence(text=text[start:end], start=start, end=end))


def _next_visible(text: str, pos: int) -> int:
    """Index of the first non-whitespace character at or after pos (len(text) when none)."""
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    return pos


def _latin_end_breaks(text: str, start: int, end: int) -> bool:
    nxt = _next_visible(text, end)
    if nxt == len(text):
        return True
    if text[nxt].islower():  # "e.g. the", "wait... what", 'said "hi!" and'
        return False
    punct = text[start:end].rstrip(_CLOSERS)
    if punct != ".":
        return True
    # A lone period: is the word before it an abbreviation, an initial or a list number?
    word_start = start
    while word_start > 0 and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:start].lstrip(_OPENERS)
    if not word:
        return True
    lowered = word.lower()
    if lowered in ABBREVIATIONS or _DOTTED.match(word):
        return False
    if lowered in NUMBER_ABBREVIATIONS and text[nxt].isdigit():
        return False
    if len(word) == 1 and word.isalpha() and word.isupper():  # an initial: "J. R. R. Tolkien"
        return False
    if word.isdigit() and len(word) <= 3:  # "1. First item" at the start of a line
        line_start = text.rfind("\n", 0, word_start) + 1
        if not text[line_start:word_start].strip():
            return False
    return True


def _newline_cuts(text: str) -> list[int]:
    """Cut positions at blank lines (always) and single line breaks not followed by a lowercase letter."""
    cuts = []
    pos = text.find("\n")
    while pos != -1:
        nxt = _next_visible(text, pos + 1)
        if nxt < len(text):
            blank_line = "\n" in text[pos + 1 : nxt]
            if blank_line or not text[nxt].islower():
                cuts.append(pos)
        pos = text.find("\n", nxt)  # newlines inside this whitespace run give no further cut
    return cuts


# ---- chunks -----------------------------------------------------------------------------------------
@dataclass(slots=True)
class Chunk:
    index: int
    start: int  # offsets into the original text: text == original[start:end]
    end: int
    text: str
    sentence_indices: list[int]  # consecutive sentence indices (one for a piece of a split sentence)
    tokens: int  # the sum of its sentences' token counts (a split piece: the counter's count)
    oversized: bool = False  # one sentence over max_chunk_tokens, kept whole (no token_counter given)
    sentence_split: bool = False  # a character window of one over-long sentence


def adjacent_similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sentence with the next ([n - 1]); zero vectors count as dissimilar."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError("embeddings must be a 2-D array [sentences, dims]")
    if vectors.shape[0] < 2:
        return np.zeros(0)
    norms = np.linalg.norm(vectors, axis=1)
    units = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
    return np.einsum("ij,ij->i", units[:-1], units[1:])


def semantic_breaks(
    similarities: np.ndarray,
    *,
    method: Method = "percentile",
    threshold: float = DEFAULT_THRESHOLD,
    percentile: float = DEFAULT_PERCENTILE,
) -> np.ndarray:
    """Boolean [n - 1]: True where a chunk ends between sentence i and i + 1."""
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.size == 0:
        return np.zeros(0, dtype=bool)
    if method == "threshold":
        cutoff = float(threshold)
    elif method == "percentile":
        if not 0 <= percentile <= 100:
            raise ValueError("percentile must be within [0, 100]")
        cutoff = float(np.percentile(sims, percentile))
    else:
        raise ValueError(f"unknown method {method!r}: 'percentile' or 'threshold'")
    return sims < cutoff


def plan_chunks(
    sentences: Sequence[Sentence],
    embeddings: np.ndarray,
    token_counts: Sequence[int],
    *,
    text: str,
    method: Method = "percentile",
    threshold: float = DEFAULT_THRESHOLD,
    percentile: float = DEFAULT_PERCENTILE,
    max_chunk_tokens: int | None = None,
    token_counter: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """Group consecutive sentences into chunks at semantic drops, within `max_chunk_tokens`.

    `sentences` come from `split_sentences(text)`; `embeddings[i]` and `token_counts[i]` belong to
    sentence i (token counts without the model's special tokens). See the module docstring for rules.
    """
    n = len(sentences)
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != n:
        raise ValueError(f"embeddings must have one row per sentence: {n} sentences, shape {embeddings.shape}")
    if len(token_counts) != n:
        raise ValueError(f"token_counts must have one count per sentence: {n} sentences, {len(token_counts)} counts")
    if max_chunk_tokens is not None and max_chunk_tokens < 1:
        raise ValueError("max_chunk_tokens must be at least 1")
    if n == 0:
        return []
    counts = [int(c) for c in token_counts]
    sims = adjacent_similarities(embeddings)
    breaks = semantic_breaks(sims, method=method, threshold=threshold, percentile=percentile)

    budget = max_chunk_tokens
    over = [budget is not None and c > budget for c in counts]
    # Groups of sentence indices [first, last] between semantic breaks and around over-long sentences.
    groups: list[tuple[int, int]] = []
    first = 0
    for i in range(n - 1):
        if breaks[i] or over[i] or over[i + 1]:
            groups.append((first, i))
            first = i + 1
    groups.append((first, n - 1))

    prefix = np.concatenate([[0], np.cumsum(counts)])
    planned: list[tuple[int, int]] = []
    for group in groups:
        planned.extend(_fit(group, prefix, sims, budget))

    chunks: list[Chunk] = []
    for first, last in planned:
        if first == last and over[first]:
            chunks.extend(_long_sentence(sentences[first], first, counts[first], text, budget, token_counter))
            continue
        start, end = sentences[first].start, sentences[last].end
        chunks.append(
            Chunk(
                index=0,
                start=start,
                end=end,
                text=text[start:end],
                sentence_indices=list(range(first, last + 1)),
                tokens=int(prefix[last + 1] - prefix[first]),
            )
        )
    for index, chunk in enumerate(chunks):
        chunk.index = index
    return chunks


def _fit(group: tuple[int, int], prefix: np.ndarray, sims: np.ndarray, budget: int | None) -> list[tuple[int, int]]:
    """Split [first, last] at its lowest inner similarity until every part fits the budget (in order)."""
    if budget is None:
        return [group]
    done: list[tuple[int, int]] = []
    stack = [group]
    while stack:
        first, last = stack.pop()
        if first == last or prefix[last + 1] - prefix[first] <= budget:
            done.append((first, last))
            continue
        inner = sims[first:last]  # similarities between first..last-1 and their successors
        cut = first + int(np.argmin(inner))  # the first of equal minima: deterministic
        stack.append((cut + 1, last))
        stack.append((first, cut))
    return done


def _long_sentence(
    sentence: Sentence,
    index: int,
    count: int,
    text: str,
    budget: int,
    token_counter: Callable[[str], int] | None,
) -> list[Chunk]:
    if token_counter is None:
        return [
            Chunk(
                index=0,
                start=sentence.start,
                end=sentence.end,
                text=sentence.text,
                sentence_indices=[index],
                tokens=count,
                oversized=True,
            )
        ]
    return [
        Chunk(
            index=0,
            start=start,
            end=end,
            text=text[start:end],
            sentence_indices=[index],
            tokens=tokens,
            sentence_split=True,
        )
        for start, end, tokens in split_by_tokens(text, sentence.start, sentence.end, budget, token_counter)
    ]


def split_by_tokens(
    text: str, start: int, end: int, budget: int, token_counter: Callable[[str], int]
) -> list[tuple[int, int, int]]:
    """Cut text[start:end] into consecutive windows of at most `budget` tokens each, as (start, end, tokens).

    Each window is the longest prefix of what is left that fits, ending where a word ends when some word
    boundary fits, else at any character (one token-dense "word" over the budget); whitespace between
    windows is skipped. A window is at least one character, even if that character alone is over the
    budget. Galloping then binary search: O(log) counter calls per window, each on at most ~2 windows of text.
    """
    word_ends = [i for i in range(start + 1, end + 1) if not text[i - 1].isspace() and (i == end or text[i].isspace())]
    windows: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        counts: dict[int, int] = {}

        def fits(cut: int, pos: int = pos, counts: dict[int, int] = counts) -> bool:
            if cut not in counts:
                counts[cut] = token_counter(text[pos:cut])
            return counts[cut] <= budget

        cut = _largest_fitting(word_ends, bisect.bisect_right(word_ends, pos), fits)
        if cut is None:
            cut = _largest_fitting(range(pos + 1, end + 1), 0, fits)
        if cut is None:
            cut = pos + 1
        fits(cut)
        windows.append((pos, cut, counts[cut]))
        pos = _next_visible(text, cut)
    return windows


def _largest_fitting(candidates: Sequence[int], lo: int, fits: Callable[[int], bool]) -> int | None:
    """The largest of candidates[lo:] that fits, assuming fitting is monotone (longer windows: more tokens)."""
    if lo >= len(candidates) or not fits(candidates[lo]):
        return None
    good, step = lo, 1
    bad = len(candidates)
    while good + step < len(candidates):  # gallop: windows double until one does not fit
        if fits(candidates[good + step]):
            good, step = good + step, step * 2
        else:
            bad = good + step
            break
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(candidates[mid]):
            good = mid
        else:
            bad = mid
    return candidates[good]
