"""English words written in Hangul (evaluation/loanwords.py): matched by their consonants, particles and
known Korean words left out."""
from __future__ import annotations

import pytest

from sqlray.evaluation.loanwords import english_skeleton, find_loanwords, hangul_skeleton, strip_particle, with_particle


@pytest.mark.parametrize("english, hangul", [
    ("player", "플레이어"), ("server", "서버"), ("level", "레벨"), ("mode", "모드"), ("score", "스코어"),
    ("screen", "스크린"), ("manager", "매니저"), ("robot", "로봇"), ("category", "카테고리"), ("ticket", "티켓"),
    ("game", "게임"), ("team", "팀"), ("item", "아이템"), ("status", "스테이터스")])
def test_a_loanword_has_its_english_words_consonants(english, hangul):
    assert find_loanwords(f"{hangul}의 값", [english]) == [(0, len(hangul), english)]


@pytest.mark.parametrize("english, hangul", [("score", "점수"), ("match", "경기"), ("username", "사용자"),
                                             ("mode", "모델"), ("level", "레버")])
def test_native_words_and_other_sounds_are_not_matched(english, hangul):
    assert find_loanwords(f"{hangul}의 값", [english]) == []


def test_skeletons_drop_vowels_silent_r_and_doubled_consonants():
    assert english_skeleton("server") == ["S", "P"] and hangul_skeleton("서버") == ["S", "P"]
    assert english_skeleton("player") == ["P", "L"] and hangul_skeleton("플레이어") == ["P", "L"]
    assert english_skeleton("box") == ["P", "K", "S"]


def test_particles_are_not_part_of_the_word_and_known_words_are_skipped():
    text = "서버별 플레이어들의 레벨이 높은 팀의 플레이어를 레벨로 스크린은"
    words = ["server", "player", "level", "team", "screen"]
    assert [(text[a:b], w) for a, b, w in find_loanwords(text, words)] == \
        [("서버", "server"), ("플레이어", "player"), ("레벨", "level"), ("팀", "team"), ("플레이어", "player"),
         ("레벨", "level"), ("스크린", "screen")]  # 를, 로 and 은 add an l or n sound: still particles
    assert find_loanwords("서비스 이용", ["server"]) == []  # 서비 + 스: 스 is no particle
    text = "로그인 기록과 체크인"  # the longest word wins: login, not log + 인
    assert [w for _, _, w in find_loanwords(text, ["log", "login", "check", "checkin"])] == ["login", "checkin"]
    assert find_loanwords("이름들의 이름으로는", ["room"], frozenset({"이름"})) == []  # known, then particles
    assert find_loanwords("이" * 100 + " 서버", ["server"]) == [(101, 103, "server")]  # a long run: skipped
    assert find_loanwords("이름을 보여줘", ["room"]) == [(0, 2, "room")]  # the same consonants as 룸...
    assert find_loanwords("이름을 보여줘", ["room"], frozenset({"이름"})) == []  # ...but 이름 is a known word
    assert find_loanwords("모두 보여줘", ["mode"], frozenset({"모두"})) == []  # 모두 (all) sounds like mode
    assert find_loanwords("'서버' value", ["server"]) == [(1, 3, "server")]  # quotes are the caller's business
    assert strip_particle("이름을") == "이름" and strip_particle("을") == "을"


def test_a_word_put_in_anothers_place_takes_the_right_particle():
    assert with_particle("나이", "이 가장") == ("나이가", 1)  # 레벨이 -> 나이가
    assert with_particle("등급", "가 가장") == ("등급이", 1)
    assert with_particle("고객", "는?") == ("고객은", 1) and with_particle("나이", "을 보여줘") == ("나이를", 1)
    assert with_particle("도시", "으로") == ("도시로", 2) and with_particle("서울", "로") == ("서울로", 1)
    assert with_particle("나이", "이름") == ("나이", 0)  # not a particle: a word goes on
    assert with_particle("등급", "로는") == ("등급으로", 1) and with_particle("나이", "과의") == ("나이와", 1)
    assert with_particle("status", "이") == ("status", 0)
