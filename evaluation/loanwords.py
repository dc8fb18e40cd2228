"""Find English words written in Hangul (loanwords) in a Korean question: 플레이어 for `player`, 서버 for
`server`, 레벨 for `level`.

Korean writes most English nouns by sound, so a question about a `players` table says 플레이어. Renaming
(rename.py) swaps `players` for a name the model knows; it must swap 플레이어 too, or the Korean question
no longer names anything in the prompt's DDL. The two spellings are compared by their consonants, the part
of a loanword that survives transcription: vowels are dropped on both sides (Korean inserts ㅡ into
English clusters, 스크린 for screen), letters fall into classes Korean merges (b/v/p/f, l/r, s/z/th),
an English r before a consonant or at the end is silent (서버, 플레이어), and a doubled consonant counts
once (플레이 writes the l twice). A word needs two consonants or more to be matched.

Pure functions.
"""
from __future__ import annotations

import re

# Hangul syllables: 0xAC00 + (onset * 21 + vowel) * 28 + coda
_ONSET = ["K", "K", "N", "T", "T", "L", "M", "P", "P", "S", "S", "", "J", "J", "J", "K", "T", "P", "H"]
_CODA = ["", "K", "K", "K", "N", "N", "N", "T", "L", "L", "L", "L", "L", "L", "L", "L", "M", "P", "P", "ST", "ST",
         "N", "J", "J", "K", "T", "P", "H"]  # ㅅ/ㅆ at a syllable's end: a final s or t (로봇, 버스)
HANGUL_RUN = re.compile(r"[\uac00-\ud7a3]+")
_VOWELS = set("aeiouy")
# what may follow a noun inside one Hangul run: case particles, plural 들, "per" 별, the copula's 인
MAX_RUN = 16
_PARTICLES = {"의", "이", "가", "은", "는", "을", "를", "별", "들", "에", "로", "과", "와", "도", "만", "인", "나", "랑",
              "에서", "으로", "에게", "까지", "부터", "보다", "이나", "이랑", "하고", "처럼", "마다"}
# English spellings, longest first, and the class each consonant sound falls in (a set where Korean varies)
_DIGRAPHS = [("tch", "J"), ("sch", "S"), ("ch", "J"), ("sh", "S"), ("th", "ST"), ("ph", "P"), ("ck", "K"),
             ("gh", ""), ("kn", "N"), ("wr", "L"), ("qu", "K"), ("ng", "N"), ("x", "K|S")]
_LETTER = {"b": "P", "v": "P", "p": "P", "f": "P", "d": "T", "t": "T", "k": "K", "q": "K", "g": "K", "s": "S",
           "z": "S", "j": "J", "l": "L", "r": "L", "m": "M", "n": "N", "h": "H"}


def english_skeleton(word: str) -> list[str]:
    """The consonant classes of an English word as Korean would write it: `server` -> [S, P]."""
    w, out, i = word.lower(), [], 0
    while i < len(w):
        c, nxt = w[i], w[i + 1] if i + 1 < len(w) else ""
        if c in _VOWELS or c == "w" or not c.isalpha():
            i += 1
            continue
        digraph = next(((s, cls) for s, cls in _DIGRAPHS if w.startswith(s, i)), None)
        if digraph:
            s, cls = digraph
            out += [x for x in cls.split("|") if x]  # x: two sounds (K then S)
            i += len(s)
            continue
        if c == "r" and (nxt not in _VOWELS or w[i + 1:] == "e"):  # non-rhotic: 서버, 플레이어, 스코어
            i += 1
            continue
        if c == "h" and out:  # after a consonant it only changes that consonant's sound
            i += 1
            continue
        cls = "S" if c == "c" and nxt in ("e", "i", "y") else "K" if c == "c" else _LETTER.get(c, "")
        if c == "g" and nxt in ("e", "i", "y"):
            cls = "KJ"  # gift or manager: 기프트, 매니저
        if cls:
            out.append(cls)
        i += 1
    return _collapse(out)


def hangul_skeleton(text: str) -> list[str]:
    """The consonant classes of a Hangul word: 서버 -> [S, P]; 플레이어 -> [P, L]."""
    out = []
    for ch in text:
        code = ord(ch) - 0xAC00
        if not 0 <= code < 11172:
            continue
        onset, coda = code // 588, code % 28
        out += [x for x in (_ONSET[onset], _CODA[coda]) if x]
    return _collapse(out)


def _collapse(classes: list[str]) -> list[str]:
    out: list[str] = []
    for c in classes:
        if not (out and set(out[-1]) & set(c)):
            out.append(c)
    return out


def _same(a: list[str], b: list[str]) -> bool:
    return len(a) == len(b) >= 2 and all(set(x) & set(y) for x, y in zip(a, b))


def strip_particle(word: str) -> str:
    """``word`` without a particle at its end (이름을 -> 이름), the longest that leaves a syllable."""
    for p in sorted(_PARTICLES, key=len, reverse=True):
        if word.endswith(p) and len(word) > len(p):
            return word[:-len(p)]
    return word


def find_loanwords(text: str, words: list[str], known: frozenset[str] = frozenset()) -> list[tuple[int, int, str]]:
    """Spans of ``text`` that write one of ``words`` (English, lower-case) in Hangul: (start, end, word).
    Each run of Hangul is a word and the particles after it (서버별, 플레이어의, 팀의): the longest word whose
    consonants match one of ``words`` wins (로그인 is `login` before `log` + 인), split off at that word's
    shortest spelling (플레이어 + 를). A run that is a ``known`` Korean word with its particles is none
    (이름들의 is not `room`). Consonants cannot tell every pair apart: 플레이 (play) reads as `player`."""
    skeletons = {w: english_skeleton(w) for w in words}
    spans = []
    for m in HANGUL_RUN.finditer(text):
        run = m.group(0)
        if len(run) > MAX_RUN or run in known or strip_particle(run) in known:
            continue  # no loanword and its particles runs to 17 syllables: a hostile run costs nothing
        splits = [n for n in range(len(run), 0, -1) if particles(run[n:])]  # 서비스 is no 서비 + 스
        if any(run[:n] in known for n in splits):
            continue  # 이름들의, 이름으로는: a known word and its particles
        for n in splits:  # the longest word first: 로그인 is login before it is log + 인
            prefix = hangul_skeleton(run[:n])
            hit = next((w for w, sk in skeletons.items() if _same(prefix, sk)), None)
            if hit:  # then its shortest spelling: 플레이어를 is 플레이어 + 를, 레벨이 is 레벨 + 이
                n = min(k for k in splits if k <= n and _same(hangul_skeleton(run[:k]), skeletons[hit]))
                spans.append((m.start(), m.start() + n, hit))
                break
    return spans


def particles(rest: str) -> bool:
    """Whether ``rest`` is nothing or particles one after another (들의, 별로), in 8 characters or fewer."""
    return not rest or len(rest) <= 8 and any(rest.startswith(p) and particles(rest[len(p):]) for p in _PARTICLES)


# particles that take another form after a vowel: (after a final consonant, after a vowel)
_PAIRS = [("이나", "나"), ("이랑", "랑"), ("으로", "로"), ("이", "가"), ("은", "는"), ("을", "를"), ("과", "와")]


def with_particle(word: str, rest: str) -> tuple[str, int]:
    """``word`` and the particle ``rest`` starts with, in the form ``word``'s last sound takes (a word put in
    another's place: 레벨이 becomes 나이가, not 나이이); returns (word + particle, characters of ``rest``
    consumed)."""
    code = ord(word[-1]) - 0xAC00 if word else -1
    if not 0 <= code < 11172:
        return word, 0
    coda = code % 28 != 0
    run = m.group(0) if (m := HANGUL_RUN.match(rest)) else ""
    for consonant_form, vowel_form in _PAIRS:
        for form in (consonant_form, vowel_form):
            if run.startswith(form) and particles(run[len(form):]):  # 로는, 과의: a chain; 이름: a word
                right = consonant_form if coda and not (consonant_form == "으로" and code % 28 == 8) else vowel_form
                return word + right, len(form)
    return word, 0
