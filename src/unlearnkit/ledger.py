"""A tamper-evident ledger of deletion requests beside a model, and the model directory that applies them.

A *model directory* holds ``model.safetensors`` (the current model: a plain checkpoint or a SISA ensemble) and,
by default, ``ledger.db`` (SQLite). Any SQLAlchemy URL works instead (``postgresql://…``), with the same code.

Two tables, one hash chain (ordered by ``seq``, shared by both tables):

* ``requests``: id, subject, the selected training ``indices`` (and the ``spec`` they came from), received time,
  status (``pending`` / ``applied``);
* ``applications``: the request ids applied together, method, config, model SHA-256 before and after, the audit
  record, applied time. The first application (method ``init``) registers the initial model and the dataset.

``model_before`` / ``model_after`` are SHA-256 digests of the model *file* (its integrity: metadata included).
The model *identity* — `unlearnkit.cache.model_sha256` of the weights, the value a record's
``models.<role>.sha256`` and a cache entry's ``weights_sha256`` hold — is stored as ``model_sha256`` in the
registration's config and in each application's audit record, so a ledger row joins records and cache entries.

Each row stores ``prev_hash`` (the previous row's hash) and ``row_hash`` = SHA-256 of its canonical JSON (every
field but ``status``, plus ``prev_hash``). `Ledger.verify` recomputes the chain, checks each status against the
applications, and checks that the model file's SHA-256 is the last application's ``model_after``: an edit of any
past row, a deleted row, or a swapped model file is reported.

`ModelDirectory.apply` batches the pending requests under an exclusive lock (a file lock on the directory and a
write transaction that re-checks the requests are still pending and the model is still the recorded one), writes
the new model to a staged file, commits the application, then swaps the staged file in with one rename. A crash
before the commit leaves the previous model and the requests pending; a crash between commit and rename is
rolled forward by the next command (the staged file carries the committed hash). The anchor (``ledger.head``) is
updated last: when that write fails the work is done and the anchor lags a row until the next command.

A command that writes the directory (``add``, ``apply``, ``create``, ``adopt``) refuses a read-only one before any
compute; a write that fails after the compute (a full disk, a lost database connection) raises `WriteFailedError`
saying what was kept (`unlearnkit.ledger_files`).

SQLAlchemy is an optional extra (``pip install 'unlearnkit[ledger]'``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, IncompatibleError, WriteFailedError
from .ledger_chain import (
    KEY_ENV,
    KEY_FILE_ENV,
    Application,
    Ledger,
    LedgerError,
    Request,
    VerifyResult,
    _mac,
    _sa,
    _sqlite_file,
    db_error,
    empty_ledger_message,
    file_sha256,
    ledger_key,
)
from .ledger_files import LOCK_FILE
from .ledger_files import check_writable as _check_writable
from .ledger_files import os_failure as _os_failure

MODEL_FILE = "model.safetensors"
LEDGER_FILE = "ledger.db"
HEAD_FILE = "ledger.head"
STAGED_PREFIX = ".staged-"
#: Test hook: seconds `ModelDirectory.apply` sleeps after computing the new model and before committing it.
SLEEP_ENV = "UNLEARNKIT_LEDGER_TEST_SLEEP"


@dataclass
class ApplyResult:
    applied: list[str]
    method: str
    model_before: str
    model_after: str
    audit: dict[str, Any]
    seconds: float


class ModelDirectory:
    """A model directory: ``model.safetensors`` and its ledger (``ledger.db`` unless ``url`` names another)."""

    #: Called with a one-line message when a command waits for another's lock (the CLI prints it).
    on_wait: Any = None

    def __init__(self, path: str | os.PathLike, url: str | None = None, *, key: bytes | str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConfigError(
                f"model directory {self.path} does not exist" + (" (it is a file)" if self.path.exists() else "")
            )
        if not (self.path / MODEL_FILE).is_file() and not any(self.path.glob(STAGED_PREFIX + "*")):
            raise ConfigError(f"{self.path} is not a model directory: it holds no {MODEL_FILE}")
        self.url = url or f"sqlite:///{(self.path / LEDGER_FILE).resolve()}"
        if url is None and not (self.path / LEDGER_FILE).is_file():
            raise ConfigError(
                f"{self.path} has no ledger; create one with `unlearnkit request init {self.path} --dataset NAME` "
                "or ModelDirectory.create(...)"
            )
        self.ledger = Ledger(self.url, key=_outside_key(self.path, key), create=False)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    # --- creation ----------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        model: Any = None,
        *,
        dataset: str,
        data_dir: str | None = None,
        url: str | None = None,
        key: bytes | str | None = None,
    ) -> ModelDirectory:
        """Register a model (a `SISAEnsemble`, an nn.Module, or an existing ``model.safetensors`` in ``path``).

        The file must be a loadable model of ``dataset`` (classes, channels, image size; refused otherwise, before
        the ledger is written). With a key (``key`` or ``$UNLEARNKIT_LEDGER_KEY[_FILE]``) the chain and the anchor
        are HMAC-SHA256 under it, and every later command needs the same key.
        """
        from .data import load_dataset
        from .guards import check_checkpoint_for
        from .jobs.checkpoints import load_checkpoint, save_checkpoint

        p = Path(path)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{p} is a file; pass the model directory (a folder holding {MODEL_FILE})")
        if model is None and not (p / MODEL_FILE).is_file():
            raise ConfigError(f"{p} holds no {MODEL_FILE}; put the model there, or pass the model to register")
        if model is not None and (p / MODEL_FILE).exists():
            raise ConfigError(f"{p / MODEL_FILE} exists already; pass no model to register it")
        db_url = url or f"sqlite:///{(p / LEDGER_FILE).resolve()}"
        db_file = _sqlite_file(db_url)
        if db_file is not None and os.path.isfile(db_file) and os.path.getsize(db_file) == 0:
            raise ConfigError(empty_ledger_message(db_file))  # not a new ledger: one whose content was lost
        if p.is_dir():
            _check_writable(p, db_url, "request init")
        k = _outside_key(p, key)
        bundle = load_dataset(dataset, data_dir)
        p.mkdir(parents=True, exist_ok=True)
        new_files = [Path(f) for f in (db_file,) if f is not None and not os.path.exists(f)]
        if model is not None:
            new_files.append(p / MODEL_FILE)
        try:  # a registration that fails (a full disk, a lost server) leaves no file it created
            if model is not None:
                save_checkpoint(model, p / MODEL_FILE)
            check_checkpoint_for(p / MODEL_FILE, bundle.info)
            load_checkpoint(p / MODEL_FILE)  # a file that does not load is refused before any ledger exists
            return cls._register(p, db_url, url, k, dataset, bundle)
        except BaseException:
            for f in new_files:
                for suffix in ("", "-journal", "-wal", "-shm"):
                    Path(f"{f}{suffix}").unlink(missing_ok=True)
            raise

    @classmethod
    def _register(cls, p: Path, db_url: str, url: str | None, k: bytes | None, dataset: str, bundle: Any) -> Any:
        """The registration row (method ``init``) of `create`, and the anchor."""
        ledger = Ledger(db_url, key=k)
        from .cache import checkpoint_sha256, dataset_digest
        from .jobs.checkpoints import head_summary, read_deleted_mask

        config: dict[str, Any] = {
            "dataset": dataset,
            "num_train": len(bundle.train),
            "data": dataset_digest(bundle.train),
            "model_sha256": checkpoint_sha256(p / MODEL_FILE),
        }
        if k is not None:
            config["keyed"] = True
        head = head_summary(p / MODEL_FILE)
        if head is not None:  # the guarantee, whether it covers the whole model or the head only, the provenance
            config["head"] = head
        already = read_deleted_mask(p / MODEL_FILE)
        if already:  # a SISA or head model with deletions made before it was registered: verify expects them
            config["deleted_before"] = already
        with ledger.write() as conn:
            if ledger._rows(conn):
                raise ConfigError(f"{p} already has a ledger; it is registered")
            sha = file_sha256(p / MODEL_FILE)
            ledger.insert_application(
                conn,
                requests=[],
                method="init",
                config=config,
                model_before="",
                model_after=sha,
                audit={},
            )
        ledger.engine.dispose()
        d = cls(p, url, key=k)
        d._write_head()
        return d

    @classmethod
    def adopt(
        cls, path: str | os.PathLike, url: str | None = None, *, key: bytes | str | None = None
    ) -> ModelDirectory:
        """Rebuild the anchor (``ledger.head``) of a directory copied without it, recorded in the ledger.

        Everything else must verify (chain, statuses, model file); the adoption is an application row (method
        ``adopt``, model unchanged), so the ledger says when the anchor was rebuilt.
        """
        d = cls(path, url, key=key)
        if (d.path / HEAD_FILE).is_file():
            raise ConfigError(f"{d.path} has its {HEAD_FILE} already; nothing to adopt (run `request verify`)")
        _check_writable(d.path, d.url, "request init --adopt")
        with d._lock():
            res = d.ledger.verify()
            d._check_model(res.problems)
            if res.problems:
                raise LedgerError("cannot adopt: the ledger fails verify:\n  - " + "\n  - ".join(res.problems))
            sha = d.current_sha()
            with d.ledger.write() as conn:
                d.ledger.insert_application(
                    conn,
                    requests=[],
                    method="adopt",
                    config={"reason": f"{HEAD_FILE} rebuilt (request init --adopt)"},
                    model_before=sha,
                    model_after=sha,
                    audit={},
                )
            d._write_head()
        return d

    # --- state -------------------------------------------------------------------------------------------
    def _genesis(self) -> Application:
        apps = self.ledger.applications_list()
        if not apps or apps[0].method != "init":
            raise LedgerError("the ledger has no registration row (init)")
        return apps[0]

    def current_sha(self) -> str:
        return self.ledger.applications_list()[-1].model_after

    def deleted(self) -> set[int]:
        return {i for r in self.ledger.requests_list(status="applied") for i in r.indices}

    def _roll_forward(self) -> None:
        """Finish a swap interrupted after its commit; remove staged files that were never committed."""
        want = self.current_sha()
        for staged in self.path.glob(STAGED_PREFIX + "*.safetensors"):
            if staged.name == f"{STAGED_PREFIX}{want}.safetensors" and (
                not self.model_path.is_file() or file_sha256(self.model_path) != want
            ):
                os.replace(staged, self.model_path)
            else:
                staged.unlink(missing_ok=True)

    def verify(self, expect: str | None = None) -> VerifyResult:
        """The ledger's chain and statuses, the anchor (``ledger.head``), that ``model.safetensors`` is the last
        recorded model, and for a SISA model that its deleted mask is the ledger's deleted set.

        What this proves: without a key, that the ledger, the anchor and the model file are consistent with
        each other; anyone with write access can still rewrite all three consistently. With the key (and the
        key kept outside the directory), that every row and the anchor were written by a holder of the key.
        ``expect`` (a row hash kept elsewhere, e.g. printed by an earlier ``apply``) also proves no row up to it
        was removed: the one guard against rolling the whole directory back to an older copy.
        """
        res = self.ledger.verify(expect)
        self._check_head(res.problems)
        if not res.problems:
            self._check_model(res.problems)
        res.ok = not res.problems
        return res

    def head_hash(self) -> str:
        """The newest row's hash: keep it elsewhere and pass it to ``verify(expect=…)`` later."""
        with self.ledger.engine.connect() as conn:
            return self.ledger._tail(conn)[1]

    def _check_model(self, problems: list[str]) -> None:
        want = self.current_sha()
        staged = self.path / f"{STAGED_PREFIX}{want}.safetensors"
        if not self.model_path.is_file():
            problems.append(f"{MODEL_FILE} is missing")
        elif file_sha256(self.model_path) != want:
            if staged.is_file() and file_sha256(staged) == want:
                problems.append("an interrupted swap is pending (the next apply or add finishes it)")
            else:
                problems.append(f"{MODEL_FILE} does not match the SHA-256 recorded by the last application")
        else:
            self._check_sisa_mask(problems)

    def _check_sisa_mask(self, problems: list[str]) -> None:
        """A SISA (or head) model's own deleted mask must equal the ledger's deleted set (registration + applied)."""
        from .jobs.checkpoints import read_deleted_mask

        mask = read_deleted_mask(self.model_path)
        if mask is None:
            return
        want = self.deleted() | {int(i) for i in self._genesis().config.get("deleted_before", [])}
        have = set(mask)
        if have != want:
            extra, missing = sorted(have - want), sorted(want - have)
            problems.append(
                f"the SISA model's deleted mask ({len(have)} indices) differs from the ledger's deleted set "
                f"({len(want)}): not in the ledger {extra[:5]}, not deleted in the model {missing[:5]}"
            )

    def _write_head(self) -> None:
        """Anchor the newest row (seq and hash) outside the database, so removing the newest rows is detected."""
        from ._io import write_json_atomic

        with self.ledger.engine.connect() as conn:
            seq, row_hash = self.ledger._tail(conn)
        head: dict[str, Any] = {"seq": seq, "row_hash": row_hash}
        if self.ledger.key is not None:
            head["mac"] = _head_mac(seq, row_hash, self.ledger.key)
        write_json_atomic(self.path / HEAD_FILE, head)

    def _write_head_after(self, done: str) -> None:
        """`_write_head` once a commit is in: a failure then says what was done (the anchor only lags a row)."""
        try:
            self._write_head()
        except OSError as exc:
            raise WriteFailedError(
                f"{done}, but {HEAD_FILE} (the anchor of the newest row) could not be updated: {_os_failure(exc)}; it "
                "still anchors an older row, and the next add or apply updates it"
            ) from exc

    def _check_head(self, problems: list[str]) -> None:
        path = self.path / HEAD_FILE
        if not path.is_file():
            problems.append(
                f"{HEAD_FILE} is missing (the anchor of the newest ledger row): if the directory was copied without "
                "it, rebuild it with `unlearnkit request init DIR --adopt` (recorded in the ledger)"
            )
            return
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
            seq, want = int(head["seq"]), str(head["row_hash"])
        except (OSError, ValueError, KeyError, TypeError):
            problems.append(f"{HEAD_FILE} is unreadable")
            return
        with self.ledger.engine.connect() as conn:
            rows = {r["seq"]: r["row_hash"] for _, r in self.ledger._rows(conn)}
        if rows.get(seq) != want:
            problems.append(f"the ledger no longer holds row {seq} recorded in {HEAD_FILE} (rows were removed)")
        elif (
            self.ledger.key is not None
            and self.ledger.keyed()
            and head.get("mac") != _head_mac(seq, want, self.ledger.key)
        ):
            problems.append(f"{HEAD_FILE} was not written with the ledger key (rewritten, or another key)")

    def _require_verified(self) -> None:
        res = self.verify()
        if not res.ok:
            raise LedgerError("the ledger fails verify; nothing was changed:\n  - " + "\n  - ".join(res.problems))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        with open(self.path / LOCK_FILE, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self.on_wait is not None:
                    self.on_wait(f"waiting for another command on {self.path} (an apply holds its lock)…")
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # --- requests ----------------------------------------------------------------------------------------
    def add(
        self,
        subject: str,
        *,
        indices: Iterable[int] | None = None,
        spec: str | None = None,
        request_id: str | None = None,
        data_dir: str | None = None,
    ) -> Request:
        """Record a deletion request for training ``indices`` or a ``spec`` (``class:3``; resolved now)."""
        from .guards import check_deletable, check_text

        check_text(subject, "the request subject (--subject)")
        if request_id is not None:
            check_text(request_id, "the request id (--id)", max_len=200)
        if (indices is None) == (spec is None):
            raise ConfigError("a request names either training indices or a spec (e.g. class:3), not both")
        _check_writable(self.path, self.url, "request add")
        with self._lock():
            self._roll_forward()
            self._require_verified()
            init = self._genesis()
            n = int(init.config["num_train"])
            if spec is not None:
                sel = self._resolve_spec(spec, init.config["dataset"], data_dir)
            else:
                try:
                    sel = sorted({int(i) for i in indices or ()})
                except (TypeError, ValueError):
                    raise ConfigError("request indices must be integers") from None
            if not sel:
                raise IncompatibleError("the request selects no training index")
            bad = [i for i in sel if not 0 <= i < n]
            if bad:
                raise IncompatibleError(f"training indices out of range [0, {n}): {bad[:5]}")
            sel = check_deletable(self.model_path, sel, spec)  # a head model deletes only its head's data
            with self.ledger.write() as conn:
                reqs = self.ledger.requests_list(conn)
                rid = request_id or f"req-{len(reqs) + 1:06d}"
                if any(r.id == rid for r in reqs):
                    raise IncompatibleError(f"a request with id {rid!r} exists already")
                gone = sorted(set(sel) & {i for r in reqs if r.status == "applied" for i in r.indices})
                if gone:
                    raise IncompatibleError(f"training indices already deleted: {gone[:5]}")
                pending = {i for r in reqs if r.status == "pending" for i in r.indices}
                if spec is not None:  # a class-wise request takes what is neither deleted nor requested yet
                    sel = [i for i in sel if i not in pending]
                    if not sel:
                        raise IncompatibleError(f"every training image of {spec} is already deleted or requested")
                asked = sorted(set(sel) & pending)
                if asked:
                    raise IncompatibleError(f"training indices already requested by a pending request: {asked[:5]}")
                req = self.ledger.insert_request(conn, request_id=rid, subject=subject, indices=sel, spec=spec)
            self._write_head_after(f"request {rid} was recorded")
            return req

    def _resolve_spec(self, spec: str, dataset: str, data_dir: str | None) -> list[int]:
        """The training indices of ``spec`` (the forget-spec grammar: ``class:K[,K…]`` or ``indices:FILE``) that
        are not deleted yet."""
        from .data import load_dataset, parse_forget_spec, split_for

        fs = parse_forget_spec(spec)
        if fs.kind not in ("class", "indices"):
            raise ConfigError(
                f"request spec {spec!r}: a request names fixed training images; use class:K[,K…] or indices:FILE "
                "(or pass training indices)"
            )
        bundle = load_dataset(dataset, data_dir)
        deleted = self.deleted()
        sel = [int(i) for i in split_for(bundle, fs, 0).forget if int(i) not in deleted]
        if not sel:
            raise IncompatibleError(f"request spec {spec!r}: every training image of it is already deleted")
        return sel

    # --- apply -------------------------------------------------------------------------------------------
    def apply(
        self,
        method: str | None = None,
        *,
        config: dict[str, Any] | None = None,
        device: str = "auto",
        seed: int = 0,
        data_dir: str | None = None,
        audit: bool = True,
        allow_partial: bool = False,
    ) -> ApplyResult | None:
        """Apply every pending request in one batch; None when none is pending.

        A run whose measured outcome is not ``complete`` (stopped before forgetting, returned the input, or lost
        too much retain accuracy; `unlearnkit.outcome`) raises `IncompleteUnlearningError` before anything is
        written: the model stays and the requests stay pending, unless ``allow_partial``.

        The compute (load the model, unlearn the batch, audit) is `unlearnkit.jobs.unlearn.unlearn_batch`; this
        method holds the lock, checks the data and commits the application before the atomic swap.
        """
        from .cache import checkpoint_sha256
        from .device import resolve_device
        from .guards import check_method_for_kind
        from .jobs.checkpoints import checkpoint_kind, save_checkpoint
        from .jobs.task import build_method, check_seed
        from .jobs.unlearn import require_complete, unlearn_batch

        device = str(resolve_device(device))  # a bad device, seed, method or option fails here, before any compute
        check_seed(seed, "--seed")
        kind = checkpoint_kind(self.model_path) if self.model_path.is_file() else None
        method = method or {"sisa": "sisa", "head": "head"}.get(str(kind), "auto")
        choice = build_method(method, config)  # unknown names and options fail even when nothing is pending
        if kind is not None:
            check_method_for_kind(kind, choice.method.name, config, self.model_path.name)
        _check_writable(self.path, self.url, "request apply")
        with self._lock():
            self._roll_forward()
            self._require_verified()
            pending = self.ledger.requests_list(status="pending")
            if not pending:
                return None
            init = self._genesis()
            before = self.current_sha()
            t0 = time.perf_counter()
            res = unlearn_batch(
                self.model_path,
                dataset=init.config["dataset"],
                registered=(int(init.config["num_train"]), str(init.config["data"])),
                forget=sorted({i for r in pending for i in r.indices}),
                deleted=self.deleted(),
                method=method,
                config=config,
                device=device,
                seed=seed,
                data_dir=data_dir,
                audit=audit,
            )
            record = res.record
            require_complete(record.get("run"), allow_partial, "the model is unchanged and the requests stay pending")
            sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
            if sleep:  # test hook: a marker says the new model is computed and nothing is committed yet
                (self.path / ".apply-sleeping").touch()
                time.sleep(sleep)
            kept = "the model and the ledger are unchanged and the requests stay pending"
            staged_tmp = self.path / f"{STAGED_PREFIX}tmp-{os.getpid()}.safetensors"
            try:
                save_checkpoint(res.model, staged_tmp)
                record["model_sha256"] = checkpoint_sha256(staged_tmp)  # the model identity (weights): see the doc
                after = file_sha256(staged_tmp)
                staged = self.path / f"{STAGED_PREFIX}{after}.safetensors"
                os.replace(staged_tmp, staged)
            except OSError as exc:
                staged_tmp.unlink(missing_ok=True)
                raise WriteFailedError(
                    f"could not write the new model in {self.path}: {_os_failure(exc)}; {kept}"
                ) from exc
            ids = [r.id for r in pending]
            committing = False
            try:
                with self.ledger.write() as conn:
                    apps = self.ledger.applications_list(conn)
                    still = {r.id for r in self.ledger.requests_list(conn, status="pending")}
                    if apps[-1].model_after != before or not set(ids) <= still:
                        raise LedgerError("another apply changed the model or the requests meanwhile; run apply again")
                    self.ledger.insert_application(
                        conn,
                        requests=ids,
                        method=res.method,
                        config=res.config,
                        model_before=before,
                        model_after=after,
                        audit=record,
                    )
                    committing = True  # the COMMIT runs as the block exits
            except Exception as exc:
                if committing and not self.ledger.is_sqlite:  # a server may have committed before the link broke
                    raise WriteFailedError(
                        f"the ledger's commit failed ({db_error(exc)}) and the database may or may not hold the "
                        f"application; the new model is kept as {staged.name}: the next `request` command on "
                        f"{self.path} swaps it in if the ledger recorded it and discards it otherwise"
                    ) from exc
                staged.unlink(missing_ok=True)
                if isinstance(exc, _sa().exc.SQLAlchemyError):
                    raise WriteFailedError(
                        f"could not record the application in the ledger: {db_error(exc)}; {kept}"
                    ) from exc
                raise
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
            os.replace(staged, self.model_path)  # the swap: readers see the old file or the new one
            self._write_head_after(f"requests {', '.join(ids)} were applied (the model and the ledger hold them)")
            return ApplyResult(ids, res.method, before, after, record, time.perf_counter() - t0)


def _head_mac(seq: int, row_hash: str, key: bytes) -> str:
    return _mac(f"{HEAD_FILE}:{seq}:{row_hash}".encode(), key)


def _outside_key(path: Path, key: bytes | str | None) -> bytes | None:
    """`ledger_key`, refusing a key file kept inside the model directory (it would protect nothing)."""
    kf = os.environ.get(KEY_FILE_ENV)
    if key is None and kf and not os.environ.get(KEY_ENV) and Path(kf).resolve().is_relative_to(path.resolve()):
        raise ConfigError(
            f"the ledger key file {kf} is inside the model directory {path}: whoever can rewrite the ledger "
            "could read it; keep the key outside (another disk, a secret store)"
        )
    return ledger_key(key)


__all__ = [
    "Application",
    "ApplyResult",
    "Ledger",
    "LedgerError",
    "ModelDirectory",
    "Request",
    "VerifyResult",
    "file_sha256",
]
