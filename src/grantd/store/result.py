"""What the store reads of SQLAlchemy's ``Result``, over rows already fetched (``Result``).

``store.postgres`` runs statements on asyncpg, not through SQLAlchemy's engine, and hands their
rows back in this, so that the store's functions read them as they read SQLAlchemy's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import MultipleResultsFound, NoResultFound


class Result:
    """What the store reads of SQLAlchemy's ``Result``: rows by ``first``/``all``/``one``/``scalar…``
    or by iteration, and ``rowcount``."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Any:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    fetchall = all

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.first()

    def one(self) -> Any:
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        return self.one_or_none()

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> Result:
        return Result([row[0] for row in self._rows], self.rowcount)
