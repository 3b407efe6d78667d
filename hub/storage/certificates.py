"""The CertificateStore port on SQL (a mixin of SqlStore)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.domain.certificates import CaCertificate
from hub.errors import CertificateAlreadyExistsError, CertificateNotFoundError, ConcurrencyConflictError
from hub.storage.rows import update_versioned
from hub.storage.tables import certificates_table

__all__ = ["SqlCertificateStore"]

_certificates = certificates_table


def _not_found(name: str) -> CertificateNotFoundError:
    return CertificateNotFoundError(f"Certificate {name!r} does not exist")


def _values(certificate: CaCertificate) -> dict[str, Any]:
    return {
        "name": certificate.name,
        "pem": certificate.pem,
        "thumbprint": certificate.thumbprint,
        "created_time": certificate.created_time,
        "updated_time": certificate.updated_time,
    }


def _from_row(row: RowMapping) -> CaCertificate:
    return CaCertificate(row["name"], row["pem"], row["created_time"], row["updated_time"], row["revision"])


class SqlCertificateStore:
    """hub.ports.CertificateStore for SqlStore, which provides ``_begin`` and
    ``_insert_ignoring_conflicts``."""

    if TYPE_CHECKING:

        def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

        def _insert_ignoring_conflicts(self, table: sa.Table, key: sa.Column[Any]) -> sa.Insert: ...

    async def add_certificate(self, certificate: CaCertificate) -> None:
        insert = self._insert_ignoring_conflicts(_certificates, _certificates.c.name)
        statement = insert.values({**_values(certificate), "revision": 1}).returning(_certificates.c.name)
        async with self._begin() as connection:
            if (await connection.execute(statement)).first() is None:
                raise CertificateAlreadyExistsError(f"Certificate {certificate.name!r} already exists")

    async def replace_certificate(self, certificate: CaCertificate, *, expected_revision: int | None) -> CaCertificate:
        values = _values(certificate)
        del values["created_time"]
        async with self._begin() as connection:
            if expected_revision is None:
                current = await connection.execute(
                    sa.select(_certificates.c.revision).where(_certificates.c.name == certificate.name)
                )
                expected_revision = current.scalar_one_or_none()
                if expected_revision is None:
                    raise _not_found(certificate.name)
            row = await update_versioned(
                connection,
                _certificates,
                "name",
                values,
                expected_revision,
                what=f"Certificate {certificate.name!r}",
                not_found=lambda: _not_found(certificate.name),
            )
        return _from_row(row)

    async def get_certificate(self, name: str) -> CaCertificate:
        async with self._begin() as connection:
            row = (await connection.execute(sa.select(_certificates).where(_certificates.c.name == name))).first()
        if row is None:
            raise _not_found(name)
        return _from_row(row._mapping)

    async def list_certificates(self) -> list[CaCertificate]:
        async with self._begin() as connection:
            rows = (await connection.execute(sa.select(_certificates).order_by(_certificates.c.name))).mappings()
            return [_from_row(row) for row in rows]

    async def remove_certificate(self, name: str, *, expected_revision: int | None) -> None:
        statement = sa.delete(_certificates).where(_certificates.c.name == name)
        if expected_revision is not None:
            statement = statement.where(_certificates.c.revision == expected_revision)
        async with self._begin() as connection:
            if (await connection.execute(statement.returning(_certificates.c.name))).first() is not None:
                return
            exists = await connection.execute(sa.select(_certificates.c.name).where(_certificates.c.name == name))
            if exists.first() is None:
                raise _not_found(name)
        raise ConcurrencyConflictError(f"Certificate {name!r} changed meanwhile")
