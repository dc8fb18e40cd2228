"""Hundreds of synthetic schemas from a shared vocabulary, so a model must read the DDL to answer.

A schema is 1-4 related entities (foreign keys follow the entity graph below), a random subset of
each entity's attributes, one naming style (snake_case, camelCase, PascalCase, UPPER, ``tbl_``/``t_``
prefixes, romanised Korean) and, for entities and attributes, one of their synonyms. The words recur
across schemas; their combinations, spellings and the tables they sit in do not, so which identifier
answers a question can only be read from the DDL.

With ``nonce`` > 0 (the base model's extra schemas, on request), some entities, attributes and category
values get made-up words instead (``tuteol``, Korean ``투털`` or the Latin word itself): names no other schema
repeats, so the only way to answer is to copy the word the question and the DDL share, which is what an
unseen database such as the held-out game one (players, matches, mode) asks for.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from sqlray.training.schemas import Column, Database, Table

# Attributes: key -> (kind, sqltype, variants [(identifier words, english, korean, romanised)], values).
# kind: num (values = (lo, hi)), cat (values = pool), date, opt (a nullable text column).
_CITIES = ("서울", "부산", "대구", "인천", "광주", "대전", "울산", "제주")
ATTRS: dict[str, tuple] = {
    "price": ("num", "INT", [("price", "price", "가격", "gagyeok"), ("cost", "cost", "비용", "biyong")], (1000, 500000)),
    "quantity": ("num", "INT", [("quantity", "quantity", "수량", "suryang"), ("qty", "quantity", "수량", "suryang")], (1, 100)),
    "amount": ("num", "INT", [("amount", "amount", "금액", "geumaek"), ("total amount", "total amount", "총액", "chongaek")], (1000, 900000)),
    "age": ("num", "INT", [("age", "age", "나이", "nai")], (1, 90)),
    "score": ("num", "INT", [("score", "score", "점수", "jeomsu"), ("points", "points", "포인트", "pointeu")], (0, 100)),
    "rating": ("num", "INT", [("rating", "rating", "평점", "pyeongjeom"), ("stars", "stars", "별점", "byeoljeom")], (1, 5)),
    "capacity": ("num", "INT", [("capacity", "capacity", "정원", "jeongwon"), ("seats", "seats", "좌석 수", "jwaseoksu")], (10, 500)),
    "duration": ("num", "INT", [("duration", "duration", "길이", "giri"), ("minutes", "minutes", "분", "bun")], (1, 300)),
    "weight": ("num", "INT", [("weight", "weight", "무게", "muge")], (1, 1000)),
    "distance": ("num", "INT", [("distance", "distance", "거리", "geori"), ("mileage", "mileage", "주행 거리", "juhaeng_geori")], (1, 90000)),
    "salary": ("num", "INT", [("salary", "salary", "급여", "geubyeo"), ("pay", "pay", "월급", "wolgeup")], (2000000, 9000000)),
    "stock": ("num", "INT", [("stock", "stock", "재고", "jaego"), ("inventory", "inventory", "재고량", "jaegoryang")], (0, 500)),
    "floor": ("num", "INT", [("floor", "floor", "층", "cheung")], (1, 30)),
    "year": ("num", "INT", [("year", "year", "연도", "yeondo"), ("release year", "release year", "출시 연도", "chulsi_yeondo")], (1990, 2025)),
    "views": ("num", "INT", [("views", "views", "조회수", "johoesu"), ("plays", "plays", "재생 수", "jaesaengsu")], (0, 100000)),
    "pages": ("num", "INT", [("pages", "pages", "쪽수", "jjoksu")], (10, 900)),
    "budget": ("num", "INT", [("budget", "budget", "예산", "yesan")], (100000, 9000000)),
    "area": ("num", "INT", [("area", "area", "면적", "myeonjeok"), ("size", "size", "크기", "keugi")], (10, 300)),
    "hours": ("num", "INT", [("hours", "hours", "시간", "sigan"), ("work hours", "work hours", "근무 시간", "geunmu_sigan")], (1, 80)),
    "balance": ("num", "INT", [("balance", "balance", "잔액", "janaek")], (0, 9000000)),
    "calories": ("num", "INT", [("calories", "calories", "칼로리", "kallori")], (50, 1500)),
    "credits": ("num", "INT", [("credits", "credits", "학점", "hakjeom")], (1, 4)),
    "nights": ("num", "INT", [("nights", "nights", "숙박 일수", "sukbak_ilsu")], (1, 14)),
    "likes": ("num", "INT", [("likes", "likes", "좋아요 수", "joayosu")], (0, 5000)),
    "experience": ("num", "INT", [("experience years", "years of experience", "경력", "gyeongnyeok")], (0, 40)),
    "temperature": ("num", "INT", [("temperature", "temperature", "온도", "ondo")], (-20, 40)),
    "status": ("cat", "VARCHAR(20)", [("status", "status", "상태", "sangtae")], ("active", "inactive", "pending", "closed")),
    "category": ("cat", "VARCHAR(30)", [("category", "category", "분류", "bunryu"), ("type", "type", "유형", "yuhyeong")], ("basic", "premium", "standard", "special")),
    "city": ("cat", "VARCHAR(30)", [("city", "city", "도시", "dosi"), ("location", "location", "지역", "jiyeok")], _CITIES),
    "grade": ("cat", "VARCHAR(5)", [("grade", "grade", "등급", "deunggeup"), ("tier", "tier", "티어", "tieo")], ("A", "B", "C", "D")),
    "gender": ("cat", "VARCHAR(10)", [("gender", "gender", "성별", "seongbyeol")], ("M", "F")),
    "color": ("cat", "VARCHAR(20)", [("color", "color", "색상", "saeksang")], ("red", "blue", "black", "white", "green")),
    "method": ("cat", "VARCHAR(20)", [("payment method", "payment method", "결제 수단", "gyeolje_sudan")], ("card", "cash", "transfer", "point")),
    "department": ("cat", "VARCHAR(30)", [("department", "department", "부서", "buseo"), ("team", "team", "소속 팀", "sosok_tim")], ("sales", "hr", "it", "finance", "design")),
    "country": ("cat", "VARCHAR(30)", [("country", "country", "국가", "gukga"), ("nationality", "nationality", "국적", "gukjeok")], ("korea", "japan", "usa", "france", "brazil")),
    "language": ("cat", "VARCHAR(20)", [("language", "language", "언어", "eoneo")], ("korean", "english", "japanese", "spanish")),
    "genre": ("cat", "VARCHAR(20)", [("genre", "genre", "장르", "jangreu")], ("drama", "comedy", "action", "fantasy", "horror")),
    "priority": ("cat", "VARCHAR(10)", [("priority", "priority", "우선순위", "useonsunwi")], ("low", "medium", "high", "urgent")),
    "position": ("cat", "VARCHAR(20)", [("position", "position", "포지션", "pojisyeon")], ("forward", "midfielder", "defender", "keeper")),
    "blood": ("cat", "VARCHAR(3)", [("blood type", "blood type", "혈액형", "hyeoraekhyeong")], ("A", "B", "O", "AB")),
    "created": ("date", "DATE", [("created at", "registration date", "등록일", "deungnogil"), ("reg date", "registration date", "등록일", "deungnogil")], ()),
    "start": ("date", "DATE", [("start date", "start date", "시작일", "sijagil")], ()),
    "due": ("date", "DATE", [("due date", "due date", "마감일", "magamil"), ("deadline", "deadline", "기한", "gihan")], ()),
    "visit": ("date", "DATE", [("visit date", "visit date", "방문일", "bangmunil")], ()),
    "birth": ("date", "DATE", [("birth date", "birth date", "생년월일", "saengnyeonworil"), ("birthday", "birthday", "생일", "saengil")], ()),
    "event_date": ("date", "DATE", [("event date", "event date", "일자", "ilja"), ("held on", "date held", "개최일", "gaechoeil")], ()),
    "email": ("opt", "VARCHAR(100)", [("email", "email", "이메일", "imeil")], ()),
    "phone": ("opt", "VARCHAR(20)", [("phone", "phone number", "전화번호", "jeonhwabeonho"), ("contact", "contact", "연락처", "yeollakcheo")], ()),
    "memo": ("opt", "TEXT", [("memo", "memo", "메모", "memo"), ("note", "note", "비고", "bigo")], ()),
    "address": ("opt", "VARCHAR(200)", [("address", "address", "주소", "juso")], ()),
}

_PEOPLE = ("김민수", "이서연", "박지훈", "최유진", "정하늘", "강도윤", "윤서아", "임준호", "한지민", "오세훈")
_EN_NAMES = ("alice", "brian", "chloe", "daniel", "emma", "felix", "grace", "henry")
# Entities: key -> (variants [(identifier word, english plural, korean, romanised)], label variants
# [(identifier words, english, korean, romanised)], label values, attribute keys, parent entity keys).
_NAME = [("name", "name", "이름", "ireum")]
ENTITIES: dict[str, tuple] = {
    "customer": ([("customer", "customers", "고객", "gogaek"), ("client", "clients", "거래처", "georaecheo")], _NAME, _PEOPLE,
                 ["age", "city", "grade", "gender", "email", "phone", "created", "birth", "address"], []),
    "product": ([("product", "products", "상품", "sangpum"), ("item", "items", "품목", "pummok")], _NAME,
                ("노트북", "마우스", "키보드", "모니터", "의자", "책상", "램프", "가방"),
                ["price", "stock", "category", "color", "rating", "created", "weight", "memo"], ["supplier"]),
    "supplier": ([("supplier", "suppliers", "공급업체", "gonggeupeopche"), ("vendor", "vendors", "협력사", "hyeomnyeoksa")], _NAME,
                 ("한빛상사", "대성물산", "미래유통", "새롬산업", "동방무역"), ["country", "rating", "city", "phone", "created"], []),
    "order": ([("order", "orders", "주문", "jumun"), ("purchase", "purchases", "구매", "gumae")], [], (),
              ["amount", "quantity", "status", "method", "created", "memo"], ["customer", "product"]),
    "employee": ([("employee", "employees", "직원", "jigwon"), ("staff", "staff members", "사원", "sawon")], _NAME, _PEOPLE,
                 ["salary", "age", "department", "grade", "start", "email", "phone", "experience"], ["office"]),
    "office": ([("office", "offices", "지점", "jijeom"), ("branch", "branches", "영업점", "yeongeopjeom")], _NAME,
               ("강남점", "종로점", "해운대점", "수성점", "둔산점"), ["city", "floor", "capacity", "budget", "created"], []),
    "student": ([("student", "students", "학생", "haksaeng")], _NAME, _PEOPLE,
                ["age", "grade", "gender", "score", "email", "birth", "city"], []),
    "course": ([("course", "courses", "강좌", "gangjwa"), ("class", "classes", "수업", "sueop")],
               [("title", "title", "제목", "jemok"), ("name", "name", "이름", "ireum")],
               ("데이터베이스", "통계학", "인공지능", "경제학", "미술사", "물리학"),
               ["capacity", "credits", "category", "start", "language", "hours"], ["instructor"]),
    "instructor": ([("instructor", "instructors", "강사", "gangsa"), ("teacher", "teachers", "교사", "gyosa")], _NAME, _PEOPLE,
                   ["salary", "department", "experience", "email", "start"], []),
    "enrollment": ([("enrollment", "enrollments", "수강 신청", "sugang"), ("registration", "registrations", "등록", "deungnok")], [], (),
                   ["score", "status", "created", "grade"], ["student", "course"]),
    "book": ([("book", "books", "도서", "doseo")], [("title", "title", "제목", "jemok")],
             ("어린왕자", "데미안", "토지", "채식주의자", "파친코", "코스모스"),
             ["pages", "year", "genre", "price", "language", "rating", "stock"], ["author"]),
    "author": ([("author", "authors", "저자", "jeoja"), ("writer", "writers", "작가", "jakga")], _NAME, _PEOPLE,
               ["country", "birth", "gender", "email"], []),
    "member": ([("member", "members", "회원", "hoewon"), ("user", "users", "사용자", "sayongja")], _NAME, _PEOPLE + _EN_NAMES,
               ["age", "city", "grade", "created", "email", "points_", "gender"], []),
    "loan": ([("loan", "loans", "대출", "daechul"), ("rental", "rentals", "대여", "daeyeo")], [], (),
             ["due", "status", "created", "nights"], ["book", "member"]),
    "patient": ([("patient", "patients", "환자", "hwanja")], _NAME, _PEOPLE,
                ["age", "gender", "blood", "visit", "phone", "birth", "address"], []),
    "doctor": ([("doctor", "doctors", "의사", "uisa"), ("physician", "physicians", "전문의", "jeonmunui")], _NAME, _PEOPLE,
               ["department", "experience", "salary", "email"], []),
    "appointment": ([("appointment", "appointments", "진료 예약", "jinryo"), ("visit", "visits", "내원", "naewon")], [], (),
                    ["amount", "status", "visit", "memo", "duration"], ["patient", "doctor"]),
    "movie": ([("movie", "movies", "영화", "yeonghwa"), ("film", "films", "작품", "jakpum")], [("title", "title", "제목", "jemok")],
              ("기생충", "올드보이", "괴물", "암살", "베테랑", "명량"), ["year", "genre", "rating", "duration", "views", "language"], []),
    "review": ([("review", "reviews", "리뷰", "ribyu"), ("comment", "comments", "댓글", "daetgeul")], [], (),
               ["rating", "created", "likes", "memo"], ["movie", "member"]),
    "hotel": ([("hotel", "hotels", "호텔", "hotel"), ("lodging", "lodgings", "숙소", "sukso")], _NAME,
              ("그랜드호텔", "바다호텔", "산장", "시티호텔", "리조트"), ["city", "rating", "capacity", "price", "phone"], []),
    "reservation": ([("reservation", "reservations", "예약", "yeyak"), ("booking", "bookings", "예매", "yemae")], [], (),
                    ["nights", "amount", "status", "start", "created"], ["hotel", "customer"]),
    "vehicle": ([("vehicle", "vehicles", "차량", "charyang"), ("truck", "trucks", "트럭", "teureok")],
                [("plate", "plate number", "차량 번호", "beonhopan")], ("12가3456", "34나5678", "56다7890", "78라1234"),
                ["year", "distance", "category", "color", "weight", "status"], []),
    "driver": ([("driver", "drivers", "기사", "gisa"), ("courier", "couriers", "배송원", "baesongwon")], _NAME, _PEOPLE,
               ["age", "rating", "experience", "phone", "start"], []),
    "delivery": ([("delivery", "deliveries", "배송", "baesong"), ("shipment", "shipments", "운송", "unsong")], [], (),
                 ["distance", "weight", "status", "due", "created", "address"], ["vehicle", "driver"]),
    "warehouse": ([("warehouse", "warehouses", "창고", "changgo"), ("depot", "depots", "물류센터", "mullyusenteo")], _NAME,
                  ("동부창고", "서부창고", "남부창고", "북부창고"), ["city", "capacity", "area", "temperature"], []),
    "team": ([("team", "teams", "팀", "tim"), ("club", "clubs", "구단", "gudan")], _NAME,
             ("타이거즈", "라이온즈", "이글스", "베어스", "트윈스"), ["city", "year", "budget", "score"], []),
    "athlete": ([("athlete", "athletes", "선수", "seonsu")], _NAME, _PEOPLE + _EN_NAMES,
                ["age", "position", "salary", "score", "country", "birth"], ["team"]),
    "event": ([("event", "events", "행사", "haengsa"), ("concert", "concerts", "공연", "gongyeon")], [("title", "title", "제목", "jemok")],
              ("봄축제", "재즈나이트", "불꽃놀이", "신년음악회", "영화제"), ["capacity", "event_date", "category", "city", "price"], ["venue"]),
    "venue": ([("venue", "venues", "공연장", "gongyeonjang"), ("hall", "halls", "홀", "hol")], _NAME,
              ("예술의전당", "올림픽홀", "블루스퀘어", "세종문화회관"), ["city", "capacity", "floor", "phone"], []),
    "ticket": ([("ticket", "tickets", "티켓", "tiket")], [], (), ["price", "grade", "status", "created"], ["event", "customer"]),
    "account": ([("account", "accounts", "계좌", "gyejwa")], [("account number", "account number", "계좌 번호", "gyejwa_beonho")],
                ("110-123", "220-456", "330-789", "440-012"), ["balance", "category", "status", "created"], ["customer"]),
    "transaction": ([("transaction", "transactions", "거래", "georae"), ("transfer", "transfers", "이체", "iche")], [], (),
                    ["amount", "category", "created", "memo"], ["account"]),
    "property": ([("property", "properties", "매물", "maemul"), ("apartment", "apartments", "아파트", "apateu")], _NAME,
                 ("래미안", "자이", "푸르지오", "힐스테이트", "아이파크"), ["price", "area", "floor", "year", "city", "status"], ["agent"]),
    "agent": ([("agent", "agents", "중개인", "junggaein"), ("broker", "brokers", "중개사", "junggaesa")], _NAME, _PEOPLE,
              ["rating", "city", "phone", "experience"], []),
    "restaurant": ([("restaurant", "restaurants", "식당", "sikdang"), ("cafe", "cafes", "카페", "kape")], _NAME,
                   ("한옥집", "바다횟집", "국수공방", "커피숲", "분식천국"), ["city", "rating", "capacity", "category", "phone"], []),
    "dish": ([("dish", "dishes", "메뉴", "menyu"), ("meal", "meals", "음식", "eumsik")], _NAME,
             ("비빔밥", "김치찌개", "불고기", "냉면", "떡볶이", "라떼"), ["price", "calories", "category", "rating"], ["restaurant"]),
    "project": ([("project", "projects", "프로젝트", "peurojekteu")], _NAME,
                ("alpha", "beta", "gamma", "delta", "omega"), ["budget", "status", "start", "due", "priority"], []),
    "task": ([("task", "tasks", "업무", "eommu"), ("ticket item", "ticket items", "작업", "jageop")], [("title", "title", "제목", "jemok")],
             ("설계", "구현", "검토", "배포", "테스트"), ["priority", "status", "due", "hours"], ["project", "employee"]),
    "device": ([("device", "devices", "기기", "gigi"), ("sensor", "sensors", "센서", "senseo")], _NAME,
               ("sensor-a", "sensor-b", "meter-1", "meter-2", "cam-3"), ["category", "status", "created", "price", "temperature"], []),
    "song": ([("song", "songs", "곡", "gok"), ("track", "tracks", "음원", "eumwon")], [("title", "title", "제목", "jemok")],
             ("봄날", "밤편지", "좋은날", "아로하", "취중진담"), ["duration", "genre", "views", "year", "rating"], ["artist"]),
    "artist": ([("artist", "artists", "가수", "gasu"), ("singer", "singers", "아티스트", "atiseuteu")], _NAME, _PEOPLE + _EN_NAMES,
               ["country", "gender", "year", "likes"], []),
    "sample": ([("sample", "samples", "검체", "geomche"), ("specimen", "specimens", "시료", "siryo")],
               [("code", "code", "코드", "kodeu")], ("S-001", "S-002", "S-003", "S-004"),
               ["category", "created", "weight", "temperature", "status"], ["patient"]),
}
ATTRS["points_"] = ("num", "INT", [("points", "points", "포인트", "pointeu"), ("mileage points", "mileage", "마일리지", "mairiji")], (0, 90000))

_KEYWORDS = {"order", "transaction", "group", "user", "class"}
STYLES = ("snake", "camel", "pascal", "upper", "prefix_tbl", "prefix_t", "roman")


@dataclass(frozen=True)
class Naming:
    style: str
    plural: bool
    pk_style: str  # "id" | "entity_id" | "entity_no"

    def ident(self, words: str, roman: str) -> str:
        ws = words.split()
        if self.style == "roman":
            return roman
        if self.style == "camel":
            return ws[0] + "".join(w.capitalize() for w in ws[1:])
        if self.style == "pascal":
            return "".join(w.capitalize() for w in ws)
        if self.style == "upper":
            return "_".join(ws).upper()
        return "_".join(ws)

    def table(self, word: str, plural: str, roman: str) -> str:
        # "order", "transaction" are SQL keywords: those tables are always plural
        use_plural = (self.plural or word in _KEYWORDS) and " " not in word
        base = plural.replace(" ", "_") if use_plural else word
        name = self.ident(base.replace("_", " "), roman)
        return {"prefix_tbl": "tbl_", "prefix_t": "t_"}.get(self.style, "") + name

    def pk(self, word: str, roman: str) -> str:
        if self.pk_style == "id":
            return self.ident("id", "id")
        return self.ident(f"{word} {'no' if self.pk_style == 'entity_no' else 'id'}", f"{roman}_{'beonho' if self.pk_style == 'entity_no' else 'id'}")


# Made-up words: consonant-vowel(-coda) syllables with a fixed Hangul spelling each, as loanwords are written
# (Hangul = 0xAC00 + (onset * 21 + vowel) * 28 + coda).
_ONSETS = {"b": 7, "d": 3, "g": 0, "k": 15, "l": 5, "m": 6, "n": 2, "p": 17, "r": 5, "s": 9, "t": 16, "j": 12, "h": 18, "": 11}
_VOWELS = {"a": 0, "e": 5, "i": 20, "o": 8, "u": 13, "eo": 4}
_CODAS = {"": 0, "n": 4, "m": 16, "l": 8, "k": 1, "ng": 21}


def korean_glosses() -> dict[str, str]:
    """How the generated Korean questions name each table word and column phrase of the vocabulary above
    (identifier words or romanised, as the DDL writes them) -> Korean: `customer` -> 고객, `created at` ->
    등록일. The first variant wins where two share a name. Renaming (evaluation.rename) uses it."""
    out: dict[str, str] = {}
    for variants, labels, *_ in ENTITIES.values():
        for v in variants + labels:
            out.setdefault(v[0], v[2])
            out.setdefault(v[3], v[2])
    for _, _, variants, _ in ATTRS.values():
        for v in variants:
            out.setdefault(v[0], v[2])
            out.setdefault(v[3], v[2])
    return out


@functools.cache
def _reserved() -> frozenset[str]:
    """SQL keywords and every real word of the vocabulary: a made-up word is none of them."""
    from sqlglot.tokens import Tokenizer

    words = {k.lower() for k in Tokenizer.KEYWORDS} | set(_KEYWORDS)
    for variants, labels, *_ in ENTITIES.values():
        words |= {w for v in variants + labels for part in (v[0], v[1], v[3]) for w in part.split()}
    for _, _, variants, _ in ATTRS.values():
        words |= {w for v in variants for part in (v[0], v[1], v[3]) for w in part.split()}
    return frozenset(words)


def nonce_word(rng: random.Random, reserved: frozenset[str] = frozenset()) -> tuple[str, str]:
    """A pronounceable made-up word of 2-3 syllables and its Hangul spelling: ('tuteol', '투털')."""
    while True:
        latin, hangul = "", ""
        for i in range(rng.choice((2, 2, 3))):
            onset = rng.choice(sorted(_ONSETS)) if i == 0 else rng.choice(sorted(set(_ONSETS) - {""}))
            vowel = rng.choice(sorted(_VOWELS))
            coda = rng.choice(sorted(_CODAS)) if rng.random() < 0.3 else ""
            latin += onset + vowel + coda
            hangul += chr(0xAC00 + (_ONSETS[onset] * 21 + _VOWELS[vowel]) * 28 + _CODAS[coda])
        if len(latin) >= 4 and latin not in reserved:
            return latin, hangul


@functools.cache
def english_words() -> tuple[str, ...]:
    """The committed list of 4,997 common English words (training/words_en.txt, from wordfreq; see its
    header), none of them an SQL keyword or a word of the vocabulary above."""
    from pathlib import Path

    text = (Path(__file__).parent / "words_en.txt").read_text(encoding="utf-8")
    return tuple(w for w in text.split("\n") if w and not w.startswith("#"))


WORD_SOURCES = ("madeup", "english")


def novel_word(rng: random.Random, reserved: frozenset[str], source: str = "madeup") -> tuple[str, str]:
    """A word outside the vocabulary above and how a Korean question writes it: a made-up word and its
    Hangul spelling, or a common English word written as it is (as Korean text often writes loanwords)."""
    if source == "english":
        while (word := rng.choice(english_words())) in reserved:
            pass
        return word, word
    return nonce_word(rng, reserved)


def naive_plural(word: str) -> str:
    """A new word's plural, as its table is named: `garden` -> `gardens`, `glass` stays `glass`."""
    return word if word.endswith("s") else word + "s"


def _nonce_entity(rng: random.Random, reserved: frozenset[str], source: str) -> tuple[tuple, tuple[str, ...]]:
    """An entity variant (word, english plural, korean, romanised) and label values, all new words."""
    word, hangul = novel_word(rng, reserved, source)
    values = tuple(novel_word(rng, reserved, source)[0] for _ in range(rng.randint(4, 8)))
    plural = naive_plural(word)
    return (word, plural, hangul if rng.random() < 0.5 else word, word), values


def _nonce_attr(rng: random.Random, reserved: frozenset[str], source: str) -> tuple[str, str, str, str]:
    word, hangul = novel_word(rng, reserved, source)
    return word, word, hangul if rng.random() < 0.5 else word, word


def _children(key: str) -> list[str]:
    return [k for k, e in ENTITIES.items() if key in e[4]]


def _pick_entities(rng: random.Random, n: int) -> list[str]:
    """A connected set of ``n`` entities: start anywhere, grow along parent/child links."""
    chosen = [rng.choice(sorted(ENTITIES))]
    while len(chosen) < n:
        frontier = sorted({k for c in chosen for k in ENTITIES[c][4] + _children(c)} - set(chosen))
        if not frontier:
            break
        chosen.append(rng.choice(frontier))
    return chosen


def synth_database(db_id: int, rng: random.Random, nonce: float = 0.0, nrng: random.Random | None = None,
                   words: str = "madeup") -> Database:
    """One schema from ``rng``. With ``nonce`` > 0, ``nrng`` (a second generator, so ``rng`` is drawn
    exactly as without) swaps that share of entity names, attribute names and category pools for new
    words from ``words`` (novel_word: made-up, or common English ones the vocabulary lacks)."""
    if nonce > 0 and nrng is None:
        raise ValueError("synth_database: nonce > 0 needs nrng, the generator of the made-up names")
    swapped = False  # any swap made: the domain then says "+nonce"

    def swap() -> bool:
        nonlocal swapped
        hit = nonce > 0 and nrng.random() < nonce
        swapped |= hit
        return hit

    reserved = _reserved() if nonce > 0 else frozenset()
    n_tables = rng.choices([1, 2, 3, 4], weights=[2, 4, 3, 2])[0]
    keys = _pick_entities(rng, n_tables)
    naming = Naming(rng.choice(STYLES), rng.random() < 0.6, rng.choice(["id", "entity_id", "entity_id", "entity_no"]))
    variant = {k: rng.choice(ENTITIES[k][0]) for k in keys}
    made_up = {}
    for k in keys:  # two tables never share a new word (nor its name and keys)
        if swap():
            made_up[k] = _nonce_entity(nrng, reserved | {v[0][0] for v in made_up.values()}, words)
    variant.update({k: v for k, (v, _) in made_up.items()})
    tables, pk_names = [], {}
    for k in keys:
        word, plural, _, roman = variant[k]
        pk_names[k] = naming.pk(word, roman)
    for k in keys:
        variants, labels, label_values, attr_keys, parents = ENTITIES[k]
        word, plural, ko, roman = variant[k]
        tname = naming.table(word, plural, roman)
        cols = [Column(pk_names[k], "INT PRIMARY KEY AUTO_INCREMENT", "pk")]
        if labels:
            lw, len_, lko, lrom = rng.choice(labels)
            ident = naming.ident(f"{word} {lw}" if rng.random() < 0.4 else lw, f"{roman}_{lrom}")
            values = made_up[k][1] if k in made_up and swap() else tuple(label_values)
            cols.append(Column(ident, "VARCHAR(100)", "name", lko, len_, values=values))
        picked = rng.sample(attr_keys, k=min(len(attr_keys), rng.randint(2, 5)))
        used = {c.name for c in cols}
        for a in picked:
            kind, sqltype, avariants, vals = ATTRS[a]
            aw, aen, ako, arom = rng.choice(avariants)
            if swap():
                aw, aen, ako, arom = _nonce_attr(nrng, reserved, words)
            if kind == "cat" and swap():  # made-up values are longer than VARCHAR(5)'s grades
                vals = tuple(novel_word(nrng, reserved, words)[0] for _ in range(len(vals)))
                sqltype = "VARCHAR(30)"
            ident = naming.ident(aw, arom)
            if ident in used:
                continue
            used.add(ident)
            lo, hi = vals if kind == "num" else (0, 100)
            cols.append(Column(ident, sqltype, kind, ako, aen, values=tuple(vals) if kind == "cat" else (), lo=lo, hi=hi))
        for p in parents:
            if p in keys:
                pw, pplural, pko, prom = variant[p]
                fk = naming.ident(f"{pw} id", f"{prom}_id") if naming.pk_style == "id" else pk_names[p]
                cols.append(Column(fk, "INT", "fk", pko, pw, ref=naming.table(pw, pplural, prom), ref_pk=pk_names[p]))
        tables.append(Table(tname, ko, plural, tuple(cols)))
    return Database(db_id, "+".join(keys) + ("+nonce" if swapped else ""), tuple(tables))


def synth_databases(n: int, seed: int, first_id: int = 100, nonce: float = 0.0, words: str = "madeup") -> list[Database]:
    """``n`` distinct schemas (two draws with the same DDL keep only the first). ``nonce`` > 0 gives the
    same sequence of schemas, deduplicated the same way, with that share of names new words (``words``)."""
    if words not in WORD_SOURCES:
        raise ValueError(f"synth_databases: words must be one of {WORD_SOURCES}, got {words!r}")
    from sqlray.training.schemas import database_ddl

    rng, nrng = random.Random(seed), random.Random(seed + 7919)
    out, seen = [], set()
    while len(out) < n:
        state = rng.getstate()
        db = synth_database(first_id + len(out), rng)
        ddl = database_ddl(db)
        if ddl not in seen:
            seen.add(ddl)
            if nonce > 0:  # the same draws again (rng rewound), this time with made-up names
                rng.setstate(state)
                db = synth_database(db.db_id, rng, nonce, nrng, words)
            out.append(db)
    return out
