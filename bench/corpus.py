"""Deterministic benchmark inputs: a fixed corpus of English sentences and a mixed-length set.

Both are generated from a seeded RNG and a fixed word list, so every run (and every server in a run)
sees exactly the same texts. The word list is filtered to words that are one token in the model's
vocabulary, so the mixed-length set hits its target token lengths exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

WORDS = """
the of and to in is was for on that with as by at from his her they this had not are but be have
one all were which she there their we been has when who will more no if out so said what up its
about into than them can only other new some could time these two may then do first any my now
such like our over man me even most made after also did many before must through back years where
much your way well down should because each just those people how too little state good very make
world still own see men work long get here between both life being under never day same another
know while last might us great old year off come since against go came right used take three
states himself few house use during without again place american around however home small found
thought went say part once general high upon school every does got united left number course war
until always away something fact though water less public put think almost hand enough far took
head yet government system better set told nothing night end why called didn find going look asked
later point knew city next program business give group toward young days let room president side
social given present several order national possible rather second face per among form important
often things looked early white case john become large big need four within felt along children saw
best church ever least power development light thinking family interest want members mind country
area others done turned although open god service certain kind problem began different door thus
help means sense whole matter perhaps itself york times law human line above name example action
company hands local show whether five history gave today either act feet across taken past quite
anyone seen having death week experience body word half really field am car words already themselves
information tell together college shall money period held keep sure free seems real behind cannot
miss political air question making office brought whose special major heard problems federal became
study ago moment available known result street economic boy position reason change south board
individual job society areas west close turn love community true court force full seem am front
market music river garden window bread morning evening summer winter spring autumn paper letter
story table chair road train ship bird tree flower stone glass fire earth cloud rain snow wind
""".split()


def _rng(seed: int) -> random.Random:
    return random.Random(seed)


def single_token_words(count_tokens: Callable[[str], int]) -> list[str]:
    """The word list, kept to words the tokenizer encodes as exactly one token (order preserved)."""
    seen: set[str] = set()
    out = []
    for w in WORDS:
        if w not in seen and count_tokens(w) == 1:
            seen.add(w)
            out.append(w)
    return out


def _sentence(rng: random.Random, words: Sequence[str], n_words: int) -> str:
    picked = [rng.choice(words) for _ in range(n_words)]
    picked[0] = picked[0].capitalize()
    return " ".join(picked) + "."


def sentences(words: Sequence[str], n: int = 2000, min_words: int = 5, max_words: int = 60, seed: int = 7) -> list[str]:
    """`n` sentences of `min_words`..`max_words` words (uniform), deterministic for a seed."""
    rng = _rng(seed)
    return [_sentence(rng, words, rng.randint(min_words, max_words)) for _ in range(n)]


def mixed_lengths(
    words: Sequence[str], n: int = 600, min_tokens: int = 5, max_tokens: int = 500, seed: int = 11
) -> tuple[list[str], list[int]]:
    """`n` texts whose full token length (2 special tokens + words + '.') is uniform in min..max.

    `words` must be single-token words (see `single_token_words`), so lengths are exact.
    """
    rng = _rng(seed)
    texts, targets = [], []
    for _ in range(n):
        target = rng.randint(min_tokens, max_tokens)
        texts.append(_sentence(rng, words, max(1, target - 3)))
        targets.append(target)
    return texts, targets
