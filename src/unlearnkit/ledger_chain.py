"""The hash-chained tables of a deletion-request ledger (`Ledger`): requests and applications in one chain.

Split out of `unlearnkit.ledger` (which re-exports every name): the rows, their canonical JSON and hashes, and
the chain check. SQLAlchemy is an optional extra (``pip install 'unlearnkit[ledger]'``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, MissingDependencyError, UnlearnkitError

GENESIS = "0" * 64
#: The ledger's HMAC key (text), or a file holding it: keep either outside the model directory.
KEY_ENV = "UNLEARNKIT_LEDGER_KEY"
KEY_FILE_ENV = "UNLEARNKIT_LEDGER_KEY_FILE"


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


def ledger_key(key: bytes | str | None = None) -> bytes | None:
    """The HMAC key of a ledger: ``key``, else ``$UNLEARNKIT_LEDGER_KEY``, else the file named by
    ``$UNLEARNKIT_LEDGER_KEY_FILE``; None when none is set (rows are then chained with plain SHA-256)."""
    if key is not None:
        k = key.encode() if isinstance(key, str) else bytes(key)
        if not k:
            raise ConfigError("the ledger key is empty")
        return k
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        try:
            k = open(path, "rb").read().strip()  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot read the ledger key file {path} (${KEY_FILE_ENV}): {exc.strerror}") from None
        if not k:
            raise ConfigError(f"the ledger key file {path} (${KEY_FILE_ENV}) is empty")
        return k
    return None


def _mac(data: bytes, key: bytes | None) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest() if key else hashlib.sha256(data).hexdigest()


def _row_hash(table: str, fields: dict[str, Any], key: bytes | None = None) -> str:
    return _mac(_canon({"table": table, **fields}).encode(), key)


def _is_memory(url: str) -> bool:
    u = url.lower().strip()
    return u in ("sqlite:", "sqlite://", "sqlite:///") or ":memory:" in u or "mode=memory" in u


def _sqlite_file(url: str) -> str | None:
    """The file of a ``sqlite:///path`` URL (None for other URLs)."""
    if not url.lower().startswith("sqlite") or "///" not in url:
        return None
    return url.split("///", 1)[1].split("?", 1)[0] or None


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

    def __init__(self, url: str, *, key: bytes | None = None, create: bool = True) -> None:
        sa = _sa()
        self.url = url
        self.key = key
        self.is_sqlite = url.lower().startswith("sqlite")
        shown = shown_url(url)
        if _is_memory(url):
            raise ConfigError(
                f"ledger URL {shown!r} (--db) is an in-memory database, lost when the process ends; give a file "
                "(sqlite:///path/ledger.db) or a server URL"
            )
        file = _sqlite_file(url)
        if not create and self.is_sqlite and (file is None or not os.path.isfile(file)):
            raise ConfigError(
                f"no ledger at {shown!r} (--db): {file or 'no file'} does not exist; check the URL for a typo, or "
                "create the ledger with `unlearnkit request init DIR --dataset NAME --db URL`"
            )
        if not create and file is not None and os.path.getsize(file) == 0:
            raise ConfigError(empty_ledger_message(file))
        kw: dict[str, Any] = {"connect_args": {"timeout": 60}} if self.is_sqlite else {}
        try:
            self.engine = sa.create_engine(url, **kw)
        except ImportError as exc:
            raise MissingDependencyError(_driver_message(shown, exc)) from None
        except sa.exc.ArgumentError as exc:
            raise ConfigError(
                f"cannot use ledger URL {shown!r} (--db): {str(exc).splitlines()[0]}; "
                "expected e.g. sqlite:///path/ledger.db or postgresql://user@host/db"
            ) from None
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
        try:
            if create:
                md.create_all(self.engine)
            elif not all(sa.inspect(self.engine).has_table(t) for t in ("requests", "applications")):
                raise ConfigError(
                    f"{shown!r} (--db) holds no deletion-request ledger; check the URL for a typo, or create one "
                    "with `unlearnkit request init DIR --dataset NAME --db URL`"
                )
        except sa.exc.SQLAlchemyError as exc:
            where = (
                "" if self.is_sqlite else "; check the --db URL and that the database server is running and reachable"
            )
            raise LedgerError(f"cannot open the ledger {shown!r} (--db): {db_error(exc)}{where}") from None

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
        row_hash = _row_hash("requests", row, self.key)
        conn.execute(self.requests.insert().values(**row, status="pending", row_hash=row_hash))
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
        conn.execute(self.applications.insert().values(**row, row_hash=_row_hash("applications", row, self.key)))
        if requests:
            conn.execute(self.requests.update().where(self.requests.c.id.in_(list(requests))).values(status="applied"))
        return int(row["seq"])

    # --- verification ------------------------------------------------------------------------------------
    def keyed(self, rows: list[tuple[str, dict[str, Any]]] | None = None) -> bool:
        """Whether the ledger was created with an HMAC key (its registration row says so)."""
        if rows is None:
            with self.engine.connect() as conn:
                rows = self._rows(conn)
        if not rows or rows[0][0] != "applications":
            return False
        try:
            return json.loads(rows[0][1]["config"]).get("keyed") is True
        except (ValueError, AttributeError):
            return False

    def verify(self, expect: str | None = None) -> VerifyResult:
        """Recompute the hash chain and check every status against the applications.

        With a key (`ledger_key`), every row hash is an HMAC: a row added or rewritten without the key fails.
        ``expect`` is a row hash kept elsewhere (``verify --expect``): the ledger must still hold that row.
        """
        problems: list[str] = []
        with self.engine.connect() as conn:
            rows = self._rows(conn)
        keyed = self.keyed(rows)
        check_hashes = True
        if keyed and self.key is None:
            problems.append(f"the ledger is keyed (HMAC-SHA256): set ${KEY_ENV} or ${KEY_FILE_ENV} to verify it")
            check_hashes = False
        elif rows and not keyed and self.key is not None:
            problems.append(
                "a ledger key is set, but this ledger is not keyed: anyone could have rewritten it consistently "
                f"(unset ${KEY_ENV}/${KEY_FILE_ENV} to check it as an unkeyed ledger)"
            )
            check_hashes = False
        if expect is not None:
            e = expect.strip().lower()
            if len(e) < 16 or any(c not in "0123456789abcdef" for c in e):
                raise ConfigError(f"--expect {expect!r}: give a row hash (at least 16 hex digits) printed earlier")
            if not any(str(r["row_hash"]).startswith(e) for _, r in rows):
                problems.append(
                    f"the ledger holds no row with hash {e[:16]}… (the anchor you kept): rows were removed or the "
                    "ledger was rewritten"
                )
        prev, applied_ids = GENESIS, set()
        for i, (table, r) in enumerate(rows, start=1):
            fields = _REQ_FIELDS if table == "requests" else _APP_FIELDS
            where = f"{table} row seq {r['seq']}"
            if r["seq"] != i:
                problems.append(f"{where}: expected seq {i} (a row was deleted or inserted)")
            if r["prev_hash"] != prev:
                problems.append(f"{where}: prev_hash does not match the previous row (a row was removed or edited)")
            if check_hashes and _row_hash(table, {k: r[k] for k in fields}, self.key) != r["row_hash"]:
                why = "edited after it was written, or another key" if keyed else "edited after it was written"
                problems.append(f"{where}: its content does not match its hash ({why})")
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


def db_error(exc: BaseException) -> str:
    """One line for a database failure (SQLAlchemy wraps the driver's error; its first line names the cause), with
    the fix where the cause says it."""
    cause, fix = db_cause_and_fix(exc)
    return f"{cause}: {fix}" if fix else cause


def db_cause_and_fix(exc: BaseException) -> tuple[str, str | None]:
    """The first line of a database failure and, for the causes we know, what to do (None otherwise)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "file is not a database" in first:
        return (
            "the file is not an SQLite database (damaged or replaced)",
            "restore the ledger file from a backup (if the folder never had a ledger, move the file away and run "
            "`unlearnkit request init`)",
        )
    if "disk is full" in first:
        return first, "free space on the disk that holds the ledger and run the command again"
    if "readonly" in first or "read-only" in first:
        return f"{first} (the ledger or its folder is read-only)", "make them writable and run the command again"
    return first, None


def shown_url(url: str) -> str:
    """``url`` with its password (``scheme://user:PASSWORD@host``) replaced by ``***``: fit for a message or a log."""
    import re

    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def empty_ledger_message(file: str | os.PathLike) -> str:
    return (
        f"the ledger file {file} is empty (0 bytes): its content was lost, or it is a placeholder. Restore it from a "
        "backup; if the model was never registered, move the file away and run `unlearnkit request init`"
    )


#: The pip package of a database driver SQLAlchemy imports (the module named in the ImportError).
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "mariadb": "mariadb",
    "pymssql": "pymssql",
    "pyodbc": "pyodbc",
    "oracledb": "oracledb",
    "cx_Oracle": "cx_Oracle",
}


def _driver_message(shown: str, exc: ImportError) -> str:
    module = (exc.name or "").split(".")[0]
    package = _DRIVER_PACKAGES.get(module)
    install = f"pip install {package}" if package else f"install the package that provides the module {module!r}"
    return (
        f"ledger URL {shown!r} (--db) needs the database driver {module or exc!s}, which is not installed: "
        f"{install} (or name an installed driver in the URL, e.g. postgresql+psycopg2://…)"
    )


__all__ = [
    "GENESIS",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "Application",
    "Ledger",
    "LedgerError",
    "Request",
    "VerifyResult",
    "db_cause_and_fix",
    "db_error",
    "empty_ledger_message",
    "file_sha256",
    "ledger_key",
    "shown_url",
]
