"""Keyword search: SQLite FTS5 ranked by bm25 on SQLite, PostgreSQL full-text search (ts_rank_cd) on PostgreSQL.

Both indexes are kept in step with `rag_chunks` by the database itself (FTS5 triggers, a generated tsvector
column; migration 0004), inside the same transactions, so they can never disagree with the chunks. A question's
words are OR-ed (stop words dropped): bm25 then rewards chunks that match the rare words.
"""

from __future__ import annotations

import re

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves tell give name please
    many much""".split()  # noqa: SIM905
)


def query_terms(question: str) -> list[str]:
    """The question's distinct words, lower-cased, without stop words, in order."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", question.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)[:64]


def keyword_search(
    session: Session, collection_id: int, question: str, limit: int, documents: list[int] | None = None
) -> list[tuple[int, float]]:
    """(chunk id, score) best first; higher scores are better. `documents` restricts to those document ids."""
    terms = query_terms(question)
    if not terms or documents == []:
        return []
    dialect = session.get_bind().dialect.name
    where_docs = " AND c.document_id IN :documents" if documents is not None else ""
    if dialect == "sqlite":
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms)
        sql = (
            "SELECT c.id, bm25(rag_chunks_fts, 0.5, 1.0) AS rank FROM rag_chunks_fts "
            "JOIN rag_chunks c ON c.id = rag_chunks_fts.rowid "
            f"WHERE rag_chunks_fts MATCH :match AND c.collection_id = :collection{where_docs} "
            "ORDER BY rank LIMIT :limit"
        )
        sign = -1.0  # bm25() is lower for better matches
    elif dialect == "postgresql":
        match = " | ".join(re.sub(r"\W", "", t) for t in terms if re.sub(r"\W", "", t))
        sql = (
            "SELECT c.id, ts_rank_cd(c.tsv, q, 1) AS rank FROM rag_chunks c, to_tsquery('english', :match) q "
            f"WHERE c.tsv @@ q AND c.collection_id = :collection{where_docs} ORDER BY rank DESC LIMIT :limit"
        )
        sign = 1.0
    else:  # pragma: no cover - the store is SQLite or PostgreSQL
        raise NotImplementedError(f"keyword search on {dialect}")
    statement = text(sql)
    params: dict = {"match": match, "collection": collection_id, "limit": limit}
    if documents is not None:
        statement = statement.bindparams(bindparam("documents", expanding=True))
        params["documents"] = documents
    return [(int(row[0]), sign * float(row[1])) for row in session.execute(statement, params)]
