"""The reference Text2SQL prompt: one definition shared by training, serving and evaluation."""
from __future__ import annotations

PROMPT_TEMPLATE = """당신은 SQL을 생성하는 SQL 봇입니다. DDL의 테이블을 활용한 Question을 해결할 수 있는 SQL 쿼리를 생성하세요.

### DDL:
{ddl}

### Question:
{question}

### SQL:
{query}"""

# Everything a model sees before the answer; generation starts right after it.
SQL_MARKER = "### SQL:\n"


def make_prompt(ddl: str, question: str, query: str = "") -> str:
    """Format the reference prompt. With ``query=""`` it is the generation prompt."""
    return PROMPT_TEMPLATE.format(ddl=ddl.strip(), question=question.strip(), query=query)


def split_prompt(ddl: str, question: str, query: str) -> tuple[str, str]:
    """(prompt, completion) for training: the loss is taken on the completion only."""
    return make_prompt(ddl, question), query.strip()
