"""The synthetic databases behind the bundled dataset: 10 domains, 1-3 tables each, with foreign keys.

Each column has a *kind* that the question templates key on:
``pk`` id, ``name`` a row's label, ``cat`` a category, ``num`` a number, ``date`` a date, ``fk`` a
reference to a parent table's ``pk``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str
    sqltype: str  # MySQL-flavoured, as in the reference dataset
    kind: str  # pk | name | cat | num | date | fk
    ko: str = ""
    en: str = ""
    values: tuple[str, ...] = ()  # pool for name/cat columns
    lo: int = 0  # range for num columns
    hi: int = 100
    ref: str = ""  # parent table for fk columns
    ref_pk: str = ""  # the parent's key column (else looked up by table name)


@dataclass(frozen=True)
class Table:
    name: str
    ko: str
    en: str
    columns: tuple[Column, ...]

    def col(self, kind: str) -> Column | None:
        return next((c for c in self.columns if c.kind == kind), None)

    def cols(self, kind: str) -> list[Column]:
        return [c for c in self.columns if c.kind == kind]


@dataclass(frozen=True)
class Database:
    db_id: int
    domain: str
    tables: tuple[Table, ...] = field(default_factory=tuple)

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)


def _pk(name: str) -> Column:
    return Column(name, "INT PRIMARY KEY AUTO_INCREMENT", "pk")


def _fk(name: str, ref: str, ko: str, en: str) -> Column:
    return Column(name, "INT", "fk", ko, en, ref=ref)


def ddl(table: Table) -> str:
    """MySQL-flavoured CREATE TABLE, shaped like the reference dataset's `context` column."""
    lines = []
    for c in table.columns:
        t = c.sqltype
        if c.kind == "name" and "NOT NULL" not in t:
            t += " NOT NULL"
        lines.append(f"  {c.name} {t}")
    for c in table.columns:
        if c.kind == "fk":
            lines.append(f"  FOREIGN KEY ({c.name}) REFERENCES {c.ref}({c.ref_pk or _pk_of(c.ref)})")
    return f"CREATE TABLE {table.name} (\n" + ",\n".join(lines) + "\n);"


_PKS: dict[str, str] = {}


def _pk_of(table: str) -> str:
    return _PKS[table]


def database_ddl(db: Database) -> str:
    return "\n\n".join(ddl(t) for t in db.tables)


GAME = Database(1, "game", (
    Table("players", "플레이어", "players", (
        _pk("player_id"),
        Column("username", "VARCHAR(255) UNIQUE", "name", "사용자 이름", "username",
               ("dragon", "shadow", "nova", "pixel", "blaze", "storm", "raven", "titan", "ember", "frost")),
        Column("server", "VARCHAR(50)", "cat", "서버", "server", ("asia", "europe", "america", "oceania")),
        Column("level", "INT", "num", "레벨", "level", lo=1, hi=99),
        Column("joined_at", "DATE", "date", "가입일", "join date"),
    )),
    Table("matches", "경기", "matches", (
        _pk("match_id"),
        _fk("player_id", "players", "플레이어", "player"),
        Column("mode", "VARCHAR(50)", "cat", "모드", "mode", ("ranked", "casual", "arena")),
        Column("score", "INT", "num", "점수", "score", lo=0, hi=5000),
        Column("played_at", "DATE", "date", "경기일", "match date"),
    )),
))

SHOP = Database(2, "shop", (
    Table("customers", "고객", "customers", (
        _pk("customer_id"),
        Column("customer_name", "VARCHAR(100)", "name", "고객 이름", "customer name",
               ("김민수", "이서연", "박지훈", "최유진", "정하늘", "강도윤", "윤서아", "임준호")),
        Column("city", "VARCHAR(50)", "cat", "도시", "city", ("서울", "부산", "대구", "인천", "광주")),
        Column("age", "INT", "num", "나이", "age", lo=18, hi=80),
        Column("signup_date", "DATE", "date", "가입일", "signup date"),
    )),
    Table("orders", "주문", "orders", (
        _pk("order_id"),
        _fk("customer_id", "customers", "고객", "customer"),
        Column("status", "VARCHAR(20)", "cat", "상태", "status", ("pending", "shipped", "delivered", "cancelled")),
        Column("amount", "INT", "num", "금액", "amount", lo=1000, hi=500000),
        Column("order_date", "DATE", "date", "주문일", "order date"),
    )),
))

HOSPITAL = Database(3, "hospital", (
    Table("doctors", "의사", "doctors", (
        _pk("doctor_id"),
        Column("doctor_name", "VARCHAR(100)", "name", "의사 이름", "doctor name",
               ("Dr. Kim", "Dr. Lee", "Dr. Park", "Dr. Choi", "Dr. Jung", "Dr. Kang")),
        Column("department", "VARCHAR(50)", "cat", "진료과", "department", ("내과", "외과", "소아과", "안과")),
        Column("years_experience", "INT", "num", "경력 연수", "years of experience", lo=1, hi=40),
        Column("hired_on", "DATE", "date", "입사일", "hire date"),
    )),
    Table("appointments", "진료 예약", "appointments", (
        _pk("appointment_id"),
        _fk("doctor_id", "doctors", "의사", "doctor"),
        Column("visit_type", "VARCHAR(30)", "cat", "진료 유형", "visit type", ("first", "follow_up", "emergency")),
        Column("fee", "INT", "num", "진료비", "fee", lo=5000, hi=200000),
        Column("visit_date", "DATE", "date", "진료일", "visit date"),
    )),
))

LIBRARY = Database(4, "library", (
    Table("authors", "작가", "authors", (
        _pk("author_id"),
        Column("author_name", "VARCHAR(100)", "name", "작가 이름", "author name",
               ("한강", "김영하", "Orwell", "Tolkien", "박경리", "Austen")),
        Column("country", "VARCHAR(50)", "cat", "국가", "country", ("korea", "uk", "usa", "japan")),
        Column("birth_year", "INT", "num", "출생 연도", "birth year", lo=1800, hi=1995),
        Column("debut_date", "DATE", "date", "데뷔일", "debut date"),
    )),
    Table("books", "책", "books", (
        _pk("book_id"),
        _fk("author_id", "authors", "작가", "author"),
        Column("title", "VARCHAR(200)", "name", "제목", "title",
               ("채식주의자", "살인자의 기억법", "1984", "토지", "Emma", "Hobbit", "소년이 온다", "Persuasion")),
        Column("genre", "VARCHAR(50)", "cat", "장르", "genre", ("novel", "poetry", "essay", "fantasy")),
        Column("pages", "INT", "num", "쪽수", "page count", lo=80, hi=1200),
        Column("published_on", "DATE", "date", "출간일", "publication date"),
    )),
    Table("loans", "대출", "loans", (
        _pk("loan_id"),
        _fk("book_id", "books", "책", "book"),
        Column("branch", "VARCHAR(50)", "cat", "지점", "branch", ("main", "north", "south")),
        Column("days", "INT", "num", "대출 일수", "loan days", lo=1, hi=60),
        Column("loaned_on", "DATE", "date", "대출일", "loan date"),
    )),
))

SCHOOL = Database(5, "school", (
    Table("students", "학생", "students", (
        _pk("student_id"),
        Column("student_name", "VARCHAR(100)", "name", "학생 이름", "student name",
               ("지민", "서준", "하은", "도현", "수아", "예준", "Alice", "Brian")),
        Column("grade", "VARCHAR(10)", "cat", "학년", "grade", ("1학년", "2학년", "3학년")),
        Column("gpa_score", "INT", "num", "성적 점수", "score", lo=0, hi=100),
        Column("enrolled_on", "DATE", "date", "입학일", "enrollment date"),
    )),
    Table("clubs", "동아리 활동", "club memberships", (
        _pk("club_id"),
        _fk("student_id", "students", "학생", "student"),
        Column("club_type", "VARCHAR(30)", "cat", "동아리 종류", "club type", ("music", "sports", "science", "art")),
        Column("hours", "INT", "num", "활동 시간", "hours", lo=1, hi=200),
        Column("joined_on", "DATE", "date", "가입일", "join date"),
    )),
))

MOVIE = Database(6, "movie", (
    Table("movies", "영화", "movies", (
        _pk("movie_id"),
        Column("movie_title", "VARCHAR(200)", "name", "영화 제목", "movie title",
               ("기생충", "올드보이", "괴물", "Inception", "Arrival", "Heat", "부산행", "Alien")),
        Column("genre", "VARCHAR(50)", "cat", "장르", "genre", ("drama", "thriller", "sf", "comedy")),
        Column("runtime_min", "INT", "num", "상영 시간", "runtime", lo=70, hi=200),
        Column("release_date", "DATE", "date", "개봉일", "release date"),
    )),
    Table("reviews", "리뷰", "reviews", (
        _pk("review_id"),
        _fk("movie_id", "movies", "영화", "movie"),
        Column("platform", "VARCHAR(30)", "cat", "플랫폼", "platform", ("naver", "imdb", "watcha")),
        Column("rating", "INT", "num", "평점", "rating", lo=1, hi=10),
        Column("reviewed_on", "DATE", "date", "작성일", "review date"),
    )),
))

BANK = Database(7, "bank", (
    Table("accounts", "계좌", "accounts", (
        _pk("account_id"),
        Column("owner_name", "VARCHAR(100)", "name", "예금주", "owner name",
               ("홍길동", "성춘향", "이몽룡", "Smith", "Jones", "장보고")),
        Column("account_type", "VARCHAR(30)", "cat", "계좌 종류", "account type", ("savings", "checking", "deposit")),
        Column("balance", "INT", "num", "잔액", "balance", lo=0, hi=9000000),
        Column("opened_on", "DATE", "date", "개설일", "opening date"),
    )),
    Table("transactions", "거래", "transactions", (
        _pk("transaction_id"),
        _fk("account_id", "accounts", "계좌", "account"),
        Column("channel", "VARCHAR(30)", "cat", "거래 채널", "channel", ("atm", "online", "branch")),
        Column("amount", "INT", "num", "거래 금액", "amount", lo=100, hi=1000000),
        Column("tx_date", "DATE", "date", "거래일", "transaction date"),
    )),
))

HOTEL = Database(8, "hotel", (
    Table("rooms", "객실", "rooms", (
        _pk("room_id"),
        Column("room_name", "VARCHAR(50)", "name", "객실 이름", "room name",
               ("Ocean", "Garden", "Sky", "Forest", "Royal", "Lake")),
        Column("room_type", "VARCHAR(30)", "cat", "객실 유형", "room type", ("single", "double", "suite")),
        Column("price", "INT", "num", "가격", "price", lo=50000, hi=900000),
        Column("renovated_on", "DATE", "date", "리모델링일", "renovation date"),
    )),
    Table("bookings", "예약", "bookings", (
        _pk("booking_id"),
        _fk("room_id", "rooms", "객실", "room"),
        Column("source", "VARCHAR(30)", "cat", "예약 경로", "source", ("web", "phone", "agency")),
        Column("nights", "INT", "num", "숙박 일수", "nights", lo=1, hi=14),
        Column("check_in", "DATE", "date", "체크인 날짜", "check-in date"),
    )),
))

WEATHER = Database(9, "weather", (
    Table("stations", "관측소", "stations", (
        _pk("station_id"),
        Column("station_name", "VARCHAR(100)", "name", "관측소 이름", "station name",
               ("서울관측소", "부산관측소", "제주관측소", "강릉관측소", "대전관측소")),
        Column("region", "VARCHAR(30)", "cat", "지역", "region", ("수도권", "영남", "호남", "강원", "제주")),
        Column("altitude", "INT", "num", "고도", "altitude", lo=0, hi=1500),
        Column("installed_on", "DATE", "date", "설치일", "installation date"),
    )),
))

FACTORY = Database(10, "factory", (
    Table("machines", "설비", "machines", (
        _pk("machine_id"),
        Column("machine_name", "VARCHAR(100)", "name", "설비 이름", "machine name",
               ("press-1", "press-2", "lathe-a", "lathe-b", "robot-x", "oven-3")),
        Column("line", "VARCHAR(20)", "cat", "라인", "line", ("A", "B", "C")),
        Column("capacity", "INT", "num", "생산 능력", "capacity", lo=10, hi=5000),
        Column("installed_on", "DATE", "date", "설치일", "installation date"),
    )),
    Table("failures", "고장 기록", "failure records", (
        _pk("failure_id"),
        _fk("machine_id", "machines", "설비", "machine"),
        Column("severity", "VARCHAR(20)", "cat", "심각도", "severity", ("low", "medium", "high")),
        Column("downtime_min", "INT", "num", "정지 시간", "downtime", lo=1, hi=900),
        Column("failed_on", "DATE", "date", "고장일", "failure date"),
    )),
))

DATABASES: tuple[Database, ...] = (GAME, SHOP, HOSPITAL, LIBRARY, SCHOOL, MOVIE, BANK, HOTEL, WEATHER, FACTORY)

for _db in DATABASES:
    for _t in _db.tables:
        _PKS[_t.name] = _t.col("pk").name
