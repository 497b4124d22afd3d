"""Build the lexical watermark's synonym table (`distillguard/data/synonyms.tsv`) from WordNet 3.0, once.

Not used at run time: the shipped TSV is what `lexical.py` reads. Rebuild it with Debian's
`wordnet-base` package unpacked anywhere (no install needed, no network at run time):

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb /tmp/wn
    python -m distillguard.forensics.lexicon_build /tmp/wn/usr/share/wordnet \
        src/distillguard/data/synonyms.tsv

A set is a WordNet synset restricted to the members for which it is the *dominant* meaning, so that
swapping one member for another rarely changes what a sentence says:
- the member is a single lower-case alphabetic word of 3+ letters, not a function word;
- the synset is the word's first (most frequent) sense in its part of speech, and the SemCor tag count
  of that sense (`cntlist.rev`) is at least `min_count` (a proxy for "common word");
- that sense carries at least `min_share` of the word's tag count over all its senses and parts of
  speech, so nouns that are mostly verbs ("start") or adjectives that are mostly nouns are left out;
- nouns and verbs are left out by default (`--pos`): their inflected forms ("starts", "houses") are not
  in WordNet's lemma list, and a base-form swap of a word that is both noun and verb ("use", "help")
  is where grammar breaks; a short hand-reviewed list of noun and verb pairs (`_CURATED_NV`) is
  added, each pair checked to share a WordNet synset, with their inflected forms (`_CURATED_FORMS`).
Each word ends up in at most one set (its first sense is one synset), which the watermark needs: the
replacement of a word must be decidable from the word alone.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections import defaultdict
from pathlib import Path

_POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_SS_TYPE = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}
_WORD = re.compile(r"^[a-z]{3,}$")
# closed-class or discourse words whose swap changes register or scope more than meaning
_STOP = frozenset(
    "also too very much more most less least only just even still already yet again then there here "  # noqa: SIM905
    "now not never ever well quite rather really so such same other another each every all any some "
    "many few several first last next own away back out off over under about around often".split()
)
# reviewed by hand: members that are mostly another part of speech in running text (prepositions,
# participles of verbs, nouns), technical terms ("static", "disabled"), or rare/archaic variants
_DROP = frozenset(
    "after given granted pretty dear beloved damn goddamn darned goddam goddamned but said aforesaid "  # noqa: SIM905
    "looking sounding extra redundant marked pronounced laden loaded ladened draped wrapped glued pasted "
    "developing underdeveloped chief older elderly teen teenage presently socialist socialistic grammatic "
    "grammatical financial fiscal religious spiritual inherent integral static motionless minimal minimum "
    "maximal maximum touching poignant striking spectacular singular remarkable queer peculiar brooding "
    "reflective blazing glaring accompanying sticking jutting projected haired hairy integrated unified "
    "disabled handicapped repeated recurrent keen incisive penetrating fleet swift peaked carven tactual "
    "gilt golden gilded everlastingly abstracted absentminded later learned erudite noted suited extended "
    "altogether".split()
)
# noun and verb sets reviewed by hand (frequent in the shared prompts, one part of speech in practice,
# same register): added to the adjective/adverb sets; `build` checks that each pair is a WordNet synonym
_CURATED_NV = (
    ("buy", "purchase"),
    ("automobile", "car"),
    ("choose", "select"),
    ("instructor", "teacher"),
    ("pupil", "student"),
    ("deduct", "subtract"),
    ("assess", "evaluate"),
    ("doctor", "physician"),
    ("carpet", "rug"),
    ("author", "writer"),
    ("photo", "photograph"),
    ("lab", "laboratory"),
    ("happen", "occur"),
    ("achieve", "attain"),
    ("assume", "presume"),
    ("epoch", "era"),
    ("owner", "proprietor"),
    ("couch", "sofa"),
    ("attorney", "lawyer"),
    ("basement", "cellar"),
    ("earthquake", "quake"),
    ("conceal", "hide"),
    ("flourish", "thrive"),
    ("detector", "sensor"),
    ("bucket", "pail"),
    ("theater", "theatre"),
)
# inflected forms of those pairs (WordNet lists lemmas only), written out by hand where both members
# inflect alike: no "chose"/"selected" (past vs participle); no calculate/compute ("compute" is a noun
# in technical prose: "compute kernel")
_CURATED_FORMS = (
    ("buys", "purchases"),
    ("bought", "purchased"),
    ("buying", "purchasing"),
    ("chooses", "selects"),
    ("choosing", "selecting"),
    ("deducts", "subtracts"),
    ("deducted", "subtracted"),
    ("deducting", "subtracting"),
    ("assesses", "evaluates"),
    ("assessed", "evaluated"),
    ("assessing", "evaluating"),
    ("happens", "occurs"),
    ("happened", "occurred"),
    ("achieves", "attains"),
    ("achieved", "attained"),
    ("achieving", "attaining"),
    ("assumes", "presumes"),
    ("assuming", "presuming"),
    ("conceals", "hides"),
    ("concealing", "hiding"),
    ("flourishes", "thrives"),
    ("flourishing", "thriving"),
    ("automobiles", "cars"),
    ("instructors", "teachers"),
    ("pupils", "students"),
    ("doctors", "physicians"),
    ("carpets", "rugs"),
    ("authors", "writers"),
    ("photographs", "photos"),
    ("laboratories", "labs"),
    ("owners", "proprietors"),
    ("couches", "sofas"),
    ("attorneys", "lawyers"),
    ("basements", "cellars"),
    ("earthquakes", "quakes"),
    ("detectors", "sensors"),
    ("buckets", "pails"),
    ("epochs", "eras"),
    ("theaters", "theatres"),
    ("biggest", "largest"),
)


def _tag_counts(wn: Path) -> dict[tuple[str, str, int], int]:
    """(lemma, pos, sense number) -> SemCor tag count, from cntlist.rev."""
    out: dict[tuple[str, str, int], int] = defaultdict(int)
    for line in (wn / "cntlist.rev").read_text(encoding="utf-8").splitlines():
        key, num, cnt = line.split()
        lemma, _, rest = key.partition("%")
        out[(lemma, _SS_TYPE[rest[0]], int(num))] += int(cnt)
    return out


def _senses(wn: Path, pos: str) -> dict[str, list[str]]:
    """lemma -> synset offsets in sense order (index.POS)."""
    out: dict[str, list[str]] = {}
    for line in (wn / f"index.{_POS[pos]}").read_text(encoding="utf-8").splitlines():
        if line.startswith(" "):  # licence header
            continue
        f = line.split()
        n_synsets, n_ptr = int(f[2]), int(f[3])
        out[f[0]] = f[6 + n_ptr : 6 + n_ptr + n_synsets]
    return out


def build(wn: Path, *, pos: str = "ar", min_count: int = 2, min_share: float = 0.6) -> list[list[str]]:
    counts = _tag_counts(wn)
    senses = {p: _senses(wn, p) for p in "nvar"}
    total: dict[str, int] = defaultdict(int)
    for (lemma, _p, _n), c in counts.items():
        total[lemma] += c
    sets: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in pos:
        for lemma, offsets in senses[p].items():
            if not _WORD.match(lemma) or lemma in _STOP or lemma in _DROP or not offsets:
                continue
            c = counts.get((lemma, p, 1), 0)
            if c < min_count or c < min_share * total[lemma]:
                continue
            sets[(p, offsets[0])].append(lemma)
    out = [sorted(m) for m in sets.values() if len(m) >= 2]
    taken = {w for m in out for w in m}
    for members in _CURATED_NV:
        for a, b in itertools.pairwise(members):
            if not any(set(senses[p].get(a, ())) & set(senses[p].get(b, ())) for p in "nv"):
                raise ValueError(f"curated set {members}: {a!r} and {b!r} share no WordNet synset")
        if taken & set(members):
            raise ValueError(f"curated set {members} overlaps an adjective/adverb set")
        out.append(sorted(members))
        taken |= set(members)
    for members in _CURATED_FORMS:
        if taken & set(members):
            raise ValueError(f"curated forms {members} overlap another set")
        out.append(sorted(members))
        taken |= set(members)
    return sorted(out)


_HEADER = """\
# Synonym sets for distillguard's lexical watermark (src/distillguard/forensics/lexical.py).
# One set a line, members tab-separated; every word is in at most one set.
# Derived from WordNet 3.0 (Debian package wordnet-base 1:3.0-37) by
# src/distillguard/forensics/lexicon_build.py: first-sense, frequent, dominant-sense members of
# adjective and adverb synsets, SemCor count >= 2, minus a hand-reviewed drop list, plus 26
# hand-picked noun and verb synonym pairs checked against WordNet and 40 hand-written inflected
# forms of them (see that module for the rules).
#
# WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.
# WordNet licence: permission to use, copy, modify and distribute this software and database and its
# documentation for any purpose and without fee or royalty is hereby granted, provided that you agree
# to comply with the following copyright notice and statements, including the disclaimer, and that
# the same appear on ALL copies of the software, database and documentation, including modifications
# that you make for internal use or for distribution.
# THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR
# WARRANTIES, EXPRESS OR IMPLIED.  BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES
# NO REPRESENTATIONS OR WARRANTIES OF MERCHANTABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT
# THE USE OF THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY
# PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS.
# The name of Princeton University or Princeton may not be used in advertising or publicity
# pertaining to distribution of the software and/or database.  Title to copyright in this software,
# database and any associated documentation shall at all times remain with Princeton University and
# LICENSEE agrees to preserve same.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wordnet_dir", type=Path, help="directory with index.adj, cntlist.rev, ...")
    ap.add_argument("out", type=Path)
    ap.add_argument("--pos", default="ar", help="parts of speech: any of n v a r (default: ar)")
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--min-share", type=float, default=0.6)
    ap.add_argument("--drop", default="", help="comma-separated words to leave out (reviewed by hand)")
    args = ap.parse_args(argv)
    drop = {w.strip() for w in args.drop.split(",") if w.strip()}
    sets = build(args.wordnet_dir, pos=args.pos, min_count=args.min_count, min_share=args.min_share)
    sets = [kept for s in sets if len(kept := [w for w in s if w not in drop]) >= 2]
    body = "".join("\t".join(s) + "\n" for s in sets)
    args.out.write_text(_HEADER + body, encoding="utf-8")
    print(f"{len(sets)} sets, {sum(map(len, sets))} words -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
