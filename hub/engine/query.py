"""Twin queries for the API and for jobs: parse, run in the store, page with continuation tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum

from hub.domain.jobs import device_job_document
from hub.domain.json import JsonObject, is_integer
from hub.domain.twin import twin_document
from hub.engine.sessions.presence import PresenceService
from hub.errors import BadRequestError
from hub.ports import QueryStore
from hub.query.ast import Query, Source, Star
from hub.query.evaluate import project
from hub.query.parser import parse_query

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "ItemType", "QueryPage", "QueryService"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class ItemType(StrEnum):
    TWIN = "twin"
    DEVICE_JOB = "deviceJob"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class QueryPage:
    items: list[JsonObject]
    item_type: ItemType
    continuation: str | None


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Where the previous page ended: the last key (keyset paging, so rows that change between
    pages are neither skipped nor repeated by position) and how many items were served (TOP)."""

    after: tuple[str, ...] | None
    served: int


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode(text: str, cursor: _Cursor) -> str:
    body = {"v": 1, "q": _fingerprint(text), "after": list(cursor.after or ()), "served": cursor.served}
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(text: str, token: str | None) -> _Cursor:
    if not token:
        return _Cursor(None, 0)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        after = body["after"]
        served = body["served"]
        fingerprint = body["q"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadRequestError("x-ms-continuation is not a continuation token this hub issued") from None
    if fingerprint != _fingerprint(text):
        raise BadRequestError("x-ms-continuation belongs to a different query")
    if (
        not isinstance(after, list)
        or not all(isinstance(k, str) for k in after)
        or not is_integer(served)
        or served < 0
    ):
        raise BadRequestError("x-ms-continuation is not a continuation token this hub issued")
    return _Cursor(tuple(after) or None, served)


def page_size_of(header: str | None) -> int:
    if header is None or header == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(header)
    except ValueError:
        raise BadRequestError(f"x-ms-max-item-count must be an integer, got {header!r}") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise BadRequestError(f"x-ms-max-item-count must be from 1 to {MAX_PAGE_SIZE}, got {size}")
    return size


class QueryService:
    def __init__(self, store: QueryStore, presence: PresenceService) -> None:
        self._store = store
        self._presence = presence

    async def run(
        self, text: object, *, page_size: int = DEFAULT_PAGE_SIZE, continuation: str | None = None
    ) -> QueryPage:
        if not isinstance(text, str):
            raise BadRequestError("query must be a string")
        query = parse_query(text)
        cursor = _decode(text, continuation)
        if query.is_aggregate:
            return await self._aggregate(text, query, page_size, cursor)
        remaining = page_size if query.top is None else min(page_size, query.top - cursor.served)
        if remaining <= 0:
            return QueryPage([], self._item_type(query), None)
        # One row more than the page tells whether another page exists without a count query.
        if query.source is Source.JOBS:
            jobs = await self._store.query_device_jobs(query.where, after=_pair(cursor.after), limit=remaining + 1)
            more = len(jobs) > remaining
            jobs = jobs[:remaining]
            docs = [device_job_document(j) for j in jobs]
            last: tuple[str, ...] | None = (jobs[-1].device_id, jobs[-1].job_id) if jobs else None
        else:
            twins = await self._store.query_twins(
                query.where, after=cursor.after[0] if cursor.after else None, limit=remaining + 1
            )
            more = len(twins) > remaining
            twins = twins[:remaining]
            docs = [twin_document(self._presence.overlay_twin(t)) for t in twins]
            last = (twins[-1].device_id,) if twins else None
        served = cursor.served + len(docs)
        if query.top is not None and served >= query.top:
            more = False
        items = docs if isinstance(query.select, Star) else [project(query, doc) for doc in docs]
        token = _encode(text, _Cursor(last, served)) if more else None
        return QueryPage(items, self._item_type(query), token)

    async def _aggregate(self, text: str, query: Query, page_size: int, cursor: _Cursor) -> QueryPage:
        # Groups are few (one per distinct key); they are computed whole and paged by position.
        rows = await self._store.aggregate(query)
        if query.top is not None:
            rows = rows[: query.top]
        page = rows[cursor.served : cursor.served + page_size]
        served = cursor.served + len(page)
        token = _encode(text, _Cursor(None, served)) if served < len(rows) else None
        return QueryPage(page, ItemType.RAW, token)

    @staticmethod
    def _item_type(query: Query) -> ItemType:
        if not isinstance(query.select, Star):
            return ItemType.RAW
        return ItemType.DEVICE_JOB if query.source is Source.JOBS else ItemType.TWIN


def _pair(after: tuple[str, ...] | None) -> tuple[str, str] | None:
    if after is None:
        return None
    if len(after) != 2:
        raise BadRequestError("x-ms-continuation is not a continuation token this hub issued")
    return (after[0], after[1])
