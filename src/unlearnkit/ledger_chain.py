"""The hash-chained tables of a deletion-request ledger (`Ledger`): requests and applications in one chain.

Split out of `unlearnkit.ledger` (which re-exports every name): the rows, their canonical JSON and hashes, and
the chain check. SQLAlchemy is an optional extra (``pip install 'unlearnkit[ledger]'``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import MissingDependencyError, UnlearnkitError

GENESIS = "0" * 64


class LedgerError(UnlearnkitError, ValueError):
    """The ledger is damaged, was edited, or does not match the model file."""


def _sa() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingDependencyError(
            "the deletion-request ledger needs SQLAlchemy: pip install 'unlearnkit[ledger]' (or sqlalchemy>=2)"
        ) from exc
    return sqlalchemy


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _row_hash(table: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(_canon({"table": table, **fields}).encode()).hexdigest()


_REQ_FIELDS = ("seq", "id", "subject", "indices", "spec", "received", "prev_hash")
_APP_FIELDS = ("seq", "requests", "method", "config", "model_before", "model_after", "audit", "applied", "prev_hash")


@dataclass(frozen=True)
class Request:
    seq: int
    id: str
    subject: str
    indices: list[int]
    spec: str | None
    received: str
    status: str


@dataclass(frozen=True)
class Application:
    seq: int
    requests: list[str]
    method: str
    config: dict[str, Any]
    model_before: str
    model_after: str
    audit: dict[str, Any]
    applied: str


@dataclass
class VerifyResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    rows: int = 0


# ------------------------------------------------------------------------------------------------ ledger
class Ledger:
    """The two chained tables in a database given by a SQLAlchemy URL (``sqlite:///path`` by default)."""

    def __init__(self, url: str) -> None:
        sa = _sa()
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kw: dict[str, Any] = {"connect_args": {"timeout": 60}} if self.is_sqlite else {}
        self.engine = sa.create_engine(url, **kw)
        if self.is_sqlite:
            # take the write lock at BEGIN (BEGIN IMMEDIATE), so two writers serialise instead of failing late
            @sa.event.listens_for(self.engine, "connect")
            def _connect(dbapi_conn: Any, _: Any) -> None:
                dbapi_conn.isolation_level = None

            @sa.event.listens_for(self.engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        md = sa.MetaData()
        self.requests = sa.Table(
            "requests",
            md,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("id", sa.String(200), nullable=False, unique=True),
            sa.Column("subject", sa.Text, nullable=False),
            sa.Column("indices", sa.Text, nullable=False),
            sa.Column("spec", sa.Text),
            sa.Column("received", sa.String(40), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("row_hash", sa.String(64), nullable=False),
        )
        self.applications = sa.Table(
            "applications",
            md,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("requests", sa.Text, nullable=False),
            sa.Column("method", sa.String(100), nullable=False),
            sa.Column("config", sa.Text, nullable=False),
            sa.Column("model_before", sa.String(64), nullable=False),
            sa.Column("model_after", sa.String(64), nullable=False),
            sa.Column("audit", sa.Text, nullable=False),
            sa.Column("applied", sa.String(40), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("row_hash", sa.String(64), nullable=False),
        )
        md.create_all(self.engine)

    # --- transactions ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[Any]:
        """A write transaction holding the ledger's write lock (SQLite: BEGIN IMMEDIATE; others: table locks)."""
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.exec_driver_sql("LOCK TABLE requests, applications IN SHARE ROW EXCLUSIVE MODE")
            yield conn

    # --- reading -----------------------------------------------------------------------------------------
    def _rows(self, conn: Any) -> list[tuple[str, dict[str, Any]]]:
        sa = _sa()
        out = [("requests", dict(r._mapping)) for r in conn.execute(sa.select(self.requests))]
        out += [("applications", dict(r._mapping)) for r in conn.execute(sa.select(self.applications))]
        return sorted(out, key=lambda t: t[1]["seq"])

    def _tail(self, conn: Any) -> tuple[int, str]:
        rows = self._rows(conn)
        return (rows[-1][1]["seq"], rows[-1][1]["row_hash"]) if rows else (0, GENESIS)

    def requests_list(self, conn: Any | None = None, status: str | None = None) -> list[Request]:
        sa = _sa()
        with contextlib.ExitStack() as st:
            c = conn or st.enter_context(self.engine.connect())
            q = sa.select(self.requests).order_by(self.requests.c.seq)
            if status:
                q = q.where(self.requests.c.status == status)
            return [
                Request(r.seq, r.id, r.subject, json.loads(r.indices), r.spec, r.received, r.status)
                for r in c.execute(q)
            ]

    def applications_list(self, conn: Any | None = None) -> list[Application]:
        sa = _sa()
        with contextlib.ExitStack() as st:
            c = conn or st.enter_context(self.engine.connect())
            q = sa.select(self.applications).order_by(self.applications.c.seq)
            return [
                Application(
                    r.seq,
                    json.loads(r.requests),
                    r.method,
                    json.loads(r.config),
                    r.model_before,
                    r.model_after,
                    json.loads(r.audit),
                    r.applied,
                )
                for r in c.execute(q)
            ]

    # --- writing -----------------------------------------------------------------------------------------
    def insert_request(
        self, conn: Any, *, request_id: str, subject: str, indices: Sequence[int], spec: str | None
    ) -> Request:
        seq, prev = self._tail(conn)
        row: dict[str, Any] = {
            "seq": seq + 1,
            "id": request_id,
            "subject": subject,
            "indices": _canon(sorted(int(i) for i in indices)),
            "spec": spec,
            "received": _now(),
            "prev_hash": prev,
        }
        conn.execute(self.requests.insert().values(**row, status="pending", row_hash=_row_hash("requests", row)))
        return Request(row["seq"], request_id, subject, json.loads(row["indices"]), spec, row["received"], "pending")

    def insert_application(
        self,
        conn: Any,
        *,
        requests: Sequence[str],
        method: str,
        config: dict[str, Any],
        model_before: str,
        model_after: str,
        audit: dict[str, Any],
    ) -> int:
        seq, prev = self._tail(conn)
        row: dict[str, Any] = {
            "seq": seq + 1,
            "requests": _canon(list(requests)),
            "method": method,
            "config": _canon(config),
            "model_before": model_before,
            "model_after": model_after,
            "audit": _canon(audit),
            "applied": _now(),
            "prev_hash": prev,
        }
        conn.execute(self.applications.insert().values(**row, row_hash=_row_hash("applications", row)))
        if requests:
            conn.execute(self.requests.update().where(self.requests.c.id.in_(list(requests))).values(status="applied"))
        return int(row["seq"])

    # --- verification ------------------------------------------------------------------------------------
    def verify(self) -> VerifyResult:
        """Recompute the hash chain and check every status against the applications."""
        problems: list[str] = []
        with self.engine.connect() as conn:
            rows = self._rows(conn)
        prev, applied_ids = GENESIS, set()
        for i, (table, r) in enumerate(rows, start=1):
            fields = _REQ_FIELDS if table == "requests" else _APP_FIELDS
            where = f"{table} row seq {r['seq']}"
            if r["seq"] != i:
                problems.append(f"{where}: expected seq {i} (a row was deleted or inserted)")
            if r["prev_hash"] != prev:
                problems.append(f"{where}: prev_hash does not match the previous row (a row was removed or edited)")
            if _row_hash(table, {k: r[k] for k in fields}) != r["row_hash"]:
                problems.append(f"{where}: its content does not match its hash (edited after it was written)")
            prev = r["row_hash"]
            if table == "applications":
                try:
                    applied_ids.update(json.loads(r["requests"]))
                except ValueError:
                    problems.append(f"{where}: unreadable request list")
        for table, r in rows:
            if table == "requests":
                want = "applied" if r["id"] in applied_ids else "pending"
                if r["status"] != want:
                    problems.append(f"request {r['id']!r}: status {r['status']!r}, but the applications say {want!r}")
        if rows and rows[0][0] != "applications":
            problems.append("the ledger does not start with the model's registration (init)")
        return VerifyResult(not problems, problems, len(rows))


# ------------------------------------------------------------------------------------------------ directory


__all__ = ["GENESIS", "Application", "Ledger", "LedgerError", "Request", "VerifyResult", "file_sha256"]
