"""The CLI verbs for deletion requests: ``unlearnkit request init|add|list|apply|verify`` and ``unlearnkit unlearn``.

Part of the CLI layer (`unlearnkit.cli` registers them): argparse definitions and handlers only, the work is done
by `unlearnkit.ledger` and the ``unlearn`` job (`unlearnkit.jobs.unlearn`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from ._common import kv


def _indices(text: str) -> list[int]:
    """``3,17,42`` or ``10-20`` ranges, or ``@FILE`` (one index per line or a JSON list)."""
    from ..data.indices import parse_index_list

    return parse_index_list(text)


def add_request(sub: Any) -> None:
    """Add the ``request`` verb to the main parser's subcommands."""
    p = sub.add_parser(
        "request",
        help="deletion requests against a model directory: init, add, list, apply, verify",
        description="A model directory holds model.safetensors and a tamper-evident ledger of deletion "
        "requests (ledger.db, or --db URL). `apply` batches the pending requests, runs the method (sisa for a "
        "SISA model), audits the result and swaps the new model in atomically.",
    )
    rs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = rs.add_parser(
        "init",
        help="register the model.safetensors of DIR and its training dataset",
        description="Register DIR/model.safetensors (a model of --dataset; checked) with a new ledger. A model "
        "directory needs model.safetensors, ledger.db (or --db) and ledger.head; a copy without ledger.head is "
        "taken over with --adopt (recorded in the ledger). With $UNLEARNKIT_LEDGER_KEY (or a key file named by "
        "$UNLEARNKIT_LEDGER_KEY_FILE, kept outside DIR) the chain and anchor are HMAC-SHA256 under that key.",
    )
    q.add_argument("dir", help="model directory")
    q.add_argument("--dataset", default=None, help="the dataset the model was trained on (required unless --adopt)")
    q.add_argument(
        "--adopt",
        action="store_true",
        help="take over a registered directory copied without ledger.head: rebuild the anchor (recorded)",
    )
    _dir_opts(q)
    q = rs.add_parser("add", help="record a deletion request (training indices or class:K)")
    q.add_argument("dir", help="model directory")
    q.add_argument("--subject", required=True, help="who or what the request is about")
    q.add_argument("--indices", default=None, help="training indices: 3,17,40-49 or @FILE")
    q.add_argument("--spec", default=None, help="a class-wise request, e.g. class:3")
    q.add_argument("--id", default=None, help="request id (default req-NNNNNN); must be new")
    _dir_opts(q)
    q = rs.add_parser("list", help="list the requests and applications")
    q.add_argument("dir", help="model directory")
    q.add_argument("--format", choices=("table", "json"), default="table")
    _dir_opts(q)
    q = rs.add_parser("apply", help="apply every pending request (one batch), audit, swap the model in")
    q.add_argument("dir", help="model directory")
    q.add_argument(
        "--method", default=None, help="method (default: sisa for a SISA model, head for a head model, else auto)"
    )
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    q.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda (default auto)")
    q.add_argument("--seed", type=int, default=0, help="seed of the method's run (default 0)")
    q.add_argument("--no-audit", action="store_true", help="skip the audit (accuracies, MIA) of the new model")
    q.add_argument("--allow-partial", action="store_true", help=_ALLOW_PARTIAL)
    _dir_opts(q)
    q = rs.add_parser(
        "verify",
        help="check the ledger's hash chain and the model file's hash",
        description="Checks the chain of rows, the statuses, the anchor (ledger.head), the model file's SHA-256 "
        "and, for a SISA model, its deleted mask against the ledger. Without a key this proves the files are "
        "consistent with each other, not who wrote them: anyone who can write DIR can rewrite all of them "
        "consistently. With the key ($UNLEARNKIT_LEDGER_KEY[_FILE], kept outside DIR) it proves every row and the "
        "anchor were written by a key holder. --expect HASH (a head hash printed earlier and kept elsewhere) "
        "also proves no row up to it was removed, e.g. by restoring an older copy of DIR.",
    )
    q.add_argument("dir", help="model directory")
    q.add_argument("--expect", default=None, metavar="HASH", help="a ledger head hash kept elsewhere (≥ 16 hex digits)")
    _dir_opts(q)


def add_unlearn(sub: Any) -> None:
    """Add the ``unlearn`` verb to the main parser's subcommands."""
    p = sub.add_parser(
        "unlearn",
        help="unlearn a forget set from your checkpoint; audit it without a retrained model",
        description="Your checkpoint + a forget spec (+ the data) -> unlearned.safetensors and audit.json: "
        "forget/retain/test accuracy, MIA efficacy, population MIAs (forget vs held-out test) and the change "
        "from the original. No retrained model is trained.",
    )
    p.add_argument("checkpoint", help="the trained model (.safetensors written by unlearnkit, or a SISA model)")
    p.add_argument("--dataset", required=True, help="the dataset it was trained on")
    p.add_argument("--forget", required=True, help="forget spec: class:3, random:0.01, indices:FILE")
    p.add_argument(
        "--method",
        default=None,
        help="method name (see `unlearnkit list methods`; default: sisa for a SISA model, head for a head model, "
        "else auto)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--out", required=True, help="output folder (unlearned.safetensors, audit.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the run (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    p.add_argument("--allow-partial", action="store_true", help=_ALLOW_PARTIAL)


_ALLOW_PARTIAL = (
    "keep a result whose outcome is not complete (stopped before forgetting, returned the input, or lost too much "
    "retain accuracy); without it such a run exits 1 and writes nothing"
)


def _dir_opts(q: argparse.ArgumentParser) -> None:
    q.add_argument("--db", default=None, help="SQLAlchemy URL of the ledger (default sqlite: DIR/ledger.db)")
    q.add_argument("--data-dir", default=None, help="folder with the dataset files")


def cmd_request(args: argparse.Namespace) -> int:
    from ..ledger import ModelDirectory

    if args.action == "init":
        if args.adopt:
            if args.dataset is not None:
                raise ConfigError(
                    "--adopt takes over a registered directory; its dataset is in the ledger (drop --dataset)"
                )
            d = ModelDirectory.adopt(args.dir, url=args.db)
            print(f"adopted {d.path}: ledger.head rebuilt (recorded in the ledger); ledger head {d.head_hash()}")
            return 0
        if args.dataset is None:
            raise ConfigError("request init needs --dataset NAME (the dataset the model was trained on)")
        d = ModelDirectory.create(args.dir, dataset=args.dataset, data_dir=args.data_dir, url=args.db)
        print(f"registered {d.model_path} (sha256 {d.current_sha()[:16]}…) with dataset {args.dataset}")
        return 0
    d = ModelDirectory(args.dir, url=args.db)
    d.on_wait = lambda msg: print(f"unlearnkit request {args.action}: {msg}", file=sys.stderr, flush=True)
    if args.action == "add":
        if (args.indices is None) == (args.spec is None):
            raise ConfigError("pass --indices or --spec (one of them)")
        req = d.add(
            args.subject,
            indices=_indices(args.indices) if args.indices is not None else None,
            spec=args.spec,
            request_id=args.id,
            data_dir=args.data_dir,
        )
        print(f"added {req.id}: {len(req.indices)} training indices, pending")
        return 0
    if args.action == "list":
        reqs, apps = d.ledger.requests_list(), d.ledger.applications_list()
        if args.format == "json":
            from dataclasses import asdict

            print(json.dumps({"requests": [asdict(r) for r in reqs], "applications": [asdict(a) for a in apps]}))
            return 0
        for r in reqs:
            shown = r.spec or f"{len(r.indices)} indices"
            print(f"{r.id:16s} {r.status:8s} {r.received}  {r.subject}  ({shown})")
        for a in apps:
            print(
                f"applied {a.applied} {a.method:8s} {a.model_before[:12] or '-':12s} -> "
                f"{a.model_after[:12]}  {a.requests}"
            )
        return 0
    if args.action == "apply":
        res = d.apply(
            args.method,
            config=kv(args.set),
            device=args.device,
            seed=args.seed,
            data_dir=args.data_dir,
            audit=not args.no_audit,
            allow_partial=args.allow_partial,
        )
        if res is None:
            print("no pending request")
            return 0
        cost = res.audit.get("cost") or {}
        extra = f", {cost['sample_fraction']:.1%} of a full retrain's sample-passes" if cost else ""
        print(
            f"applied {len(res.applied)} requests with {res.method} in {res.seconds:.1f} s{extra}; "
            f"model {res.model_before[:12]} -> {res.model_after[:12]}; ledger head {d.head_hash()}"
        )
        head = res.audit.get("head")
        if head:
            print(head_line(head))
        return 0
    if args.action == "verify":
        v = d.verify(args.expect)
        if v.ok:
            keyed = "HMAC-keyed" if d.ledger.key is not None else "unkeyed"
            print(
                f"ok: {v.rows} ledger rows chained ({keyed}), model.safetensors matches the last application; "
                f"ledger head {d.head_hash()}"
            )
            return 0
        for p in v.problems:
            print(f"unlearnkit request verify: {p}", file=sys.stderr)
        return 1
    raise ConfigError(f"unknown request action {args.action!r}")


def cmd_unlearn(args: argparse.Namespace) -> int:
    from .._io import check_output_dir
    from ..jobs.task import resolve_unlearn_task
    from ..jobs.unlearn import unlearn_job

    out = check_output_dir(args.out)
    task = resolve_unlearn_task(
        args.checkpoint,
        args.dataset,
        args.forget,
        args.method,
        config=kv(args.set),
        seed=args.seed,
        device=args.device,
        data_dir=args.data_dir,
    )
    res = unlearn_job(task, out, allow_partial=args.allow_partial)
    u = res.audit.get("unlearned", {})
    print(
        f"{res.method}: {res.seconds:.1f} s; forget acc {u.get('accuracy_forget', float('nan')):.1f}, retain acc "
        f"{u.get('accuracy_retain', float('nan')):.1f}, test acc {u.get('accuracy_test', float('nan')):.1f}, "
        f"MIA efficacy {u.get('mia_efficacy_forget', float('nan')):.1f}"
    )
    check = res.audit.get("held_out_check") or {}
    if check:
        print(f"forget set {check.get('verdict', 'unknown')}: {check.get('why', '')}")
    run = res.audit.get("run") or {}
    if run.get("outcome", "complete") != "complete":
        print(f"outcome {run.get('outcome')}: {run.get('detail', '')} (kept: --allow-partial)", file=sys.stderr)
    if res.audit.get("head"):
        print(head_line(res.audit["head"]))
    print(f"wrote {out}/unlearned.safetensors, audit.json")
    return 0


def head_line(head: dict[str, Any]) -> str:
    """One line: the guarantee of a head-model deletion, where it holds, and (certified) the budget."""
    line = (
        f"{head['guarantee']} deletion of {head['deleted']} images; the guarantee covers the {head['scope']} "
        f"({head['scope_detail']})"
    )
    c = head.get("certificate") or {}
    if c:
        line += (
            f"; σ={c['sigma']:g} λ={head['lam']:g} ε={c['eps']:g} δ={c['delta']:g}: request bound "
            f"{c['bound_request']:.3g}, accumulated {c['bound_accumulated']:.3g} of {c['budget']:.3g} "
            f"(ε spent {c['eps_spent']:.3g})"
        )
        if c.get("retrained"):
            line += f"; retrained with a fresh b: {c['retrain_reason']}"
    return line
