"""Translation of database driver errors into the hub's error tree, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy.exc as sa_exc

from hub.errors import BadRequestError, ServiceUnavailableError

__all__ = ["translate_errors"]

# SQLSTATE classes meaning "cannot reach or use the server now": connection exception,
# insufficient resources, operator intervention, bad credentials, missing database.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "28", "3D"})
_DATA_SQLSTATE_CLASS = "22"


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    for source in (exc.orig, getattr(exc.orig, "__cause__", None)):
        code = getattr(source, "sqlstate", None) or getattr(source, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _reason(exc: BaseException) -> str:
    # The driver's own message: SQLAlchemy's rendering would add the statement, and the
    # engines hide parameters anyway, but keys must never reach a log or a response body.
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else None
    source = orig if orig is not None else exc
    text = str(source).strip() or type(source).__name__
    return text.splitlines()[0]


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        if isinstance(exc.orig, OSError):
            return True
        code = _sqlstate(exc)
        return code is not None and code[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


def _is_bad_data(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DataError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        code = _sqlstate(exc)
        return code is not None and code.startswith(_DATA_SQLSTATE_CLASS)
    return False


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connectivity failures into ServiceUnavailableError and values the database refuses
    (PostgreSQL cannot hold ``\\u0000`` in jsonb, say) into BadRequestError."""
    try:
        yield
    except UnicodeEncodeError as exc:
        # Lone surrogates (legal as JSON escapes) have no UTF-8 form for the driver to send.
        raise BadRequestError(f"A value cannot be stored: {exc.reason}") from exc
    except (OSError, sa_exc.SQLAlchemyError) as exc:
        if _is_unavailable(exc):
            raise ServiceUnavailableError(f"The database is unavailable: {_reason(exc)}") from exc
        if _is_bad_data(exc):
            raise BadRequestError(f"The database refused a value: {_reason(exc)}") from exc
        raise
