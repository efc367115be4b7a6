"""The markdown of `sisa_fashion_mnist.py`, written from whatever rows its ``.jsonl`` holds (``·`` = not yet
measured). Kept apart so each file reads in one sitting; `render` takes the script's `Bench`."""

from __future__ import annotations

import shlex
from typing import Any

ACC_TARGET_PP = 2.0
SINGLE_DELETE_TARGET = 0.15
TARGET_SHARDS = 10
REQUESTS = ("one image", "random 1 %", "class 0")
GAP_SPECS = ("random:0.1", "class:0")
AGGS = ("vote", "softmax")
M = "·"


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _pct(v: float | None) -> str:
    return M if v is None else f"{100 * v:.1f} %"


def _command(argv: list[str]) -> str:
    """The command without ``--part`` / ``--max-minutes`` (how the run was split does not change its rows)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--part", "--max-minutes"):
            skip = True
            continue
        if a.startswith(("--part=", "--max-minutes=")):
            continue
        out.append(a)
    return ("python benchmarks/sisa_fashion_mnist.py " + shlex.join(out)).strip()


def _verdict(oks: list[bool], complete: bool) -> str:
    if not oks:
        return "not yet measured"
    if not all(oks):
        return "FAIL"
    return "PASS" if complete else "PASS so far (some cells not yet measured)"


def _header(b: Any, rows: list[dict[str, Any]], n_units: int) -> list[str]:
    args, env = b.args, b.env
    shas = sorted({(r.get("package") or {}).get("git_sha") or "unknown" for r in rows})
    dates = sorted(r["date_utc"] for r in rows if r.get("date_utc"))
    loads = [float(r["loadavg_1min"]) for r in rows if "loadavg_1min" in r]
    dirty = any((r.get("package") or {}).get("src_dirty") for r in rows)
    compute = sum(float(r.get("unit_seconds") or 0) for r in rows)
    policies = sorted({str(r.get("omp_wait_policy")) for r in rows})
    rec, mem, n = b.recipe, b.member_recipe, len(b.bundle.train)
    lines = [
        f"# SISA on {b.bundle.info.name}: ensemble accuracy and the cost of exact deletion",
        "",
        "Regenerate (resumable: a rerun skips the recorded units; split it with `--part i/n` and `--max-minutes M`, "
        "see `benchmarks/README.md`; the single models come from the library cache, trained on first use):",
        "",
        "```bash",
        _command(b.argv),
        "```",
        "",
    ]
    if rows:
        lines.append(
            f"Rows: {len(rows)} of {n_units} units measured, on commit "
            + ", ".join(f"`{s[:10]}`" for s in shas)
            + (" (with uncommitted changes under `src/`)" if dirty else "")
            + f", {dates[0]} – {dates[-1]} UTC; {env['machine']}, {env['cpu_count']} CPU cores, torch "
            f"{env['torch']} ({env['threads']} threads, `OMP_WAIT_POLICY` {'/'.join(policies)}), device "
            f"`{env['device']}`. Compute of the recorded units: {compute / 60:.1f} min. Raw rows: "
            f"`{b.records.path.name}`. 1-minute load average when the rows were written: "
            + (f"{min(loads):.1f}–{max(loads):.1f}" if loads else "not recorded")
            + (
                f" (above the {env['cpu_count']} cores: other processes competed for them, which inflates some wall "
                "times; each ratio compares timings taken back to back)."
                if loads and max(loads) > (env["cpu_count"] or 1)
                else "."
            )
        )
    else:
        lines.append("No unit measured yet.")
    lines += [
        "",
        f"**Recipes.** Single model: `{args.model}`, {rec.epochs} epochs, batch {rec.batch_size}, {rec.optimizer} "
        f"lr {rec.lr} (momentum {rec.momentum}), {rec.schedule}, weight decay {rec.weight_decay}, "
        f"{'augmentation' if rec.augment else 'no augmentation'}"
        + (" (the library's default recipe)" if rec == b.base else f" (the default recipe has {b.base.epochs} epochs)")
        + f". SISA members: the same recipe with **{mem.epochs} epochs**, each on 1/S of the data; with R slices, "
        f"stage r trains on slices 1..r for `stage_epochs` epochs (2e/(R+1) on average), so every R costs "
        f"about the same sample-passes: {mem.epochs} × {n:,} for the whole ensemble against {rec.epochs} × {n:,} "
        f"for the single model. Aggregation: `{args.aggregation}`. Seed {args.seed}. `{M}` = not yet measured.",
        "",
    ]
    return lines


def _target_rows(
    b: Any, rs: list[int], acc: dict[Any, Any], dels: dict[Any, Any], default_acc: float | None, denom: float | None
) -> list[str]:
    """The accuracy and deletion-cost targets on S = 10, one cell per R."""
    agg, lines = b.args.aggregation, []
    meas, oks = [], []
    for r in rs:
        a = acc[(TARGET_SHARDS, r)]
        if a is None or default_acc is None:
            meas.append(f"R={r}: {M}")
            continue
        d = {h: a[h] - default_acc for h in AGGS}
        oks.append(abs(d[agg]) <= ACC_TARGET_PP)
        meas.append(
            f"R={r}: vote {a['vote']:.2f} / softmax {a['softmax']:.2f} vs {default_acc:.2f} "
            f"({d['vote']:+.2f} / {d['softmax']:+.2f} pp)"
        )
    lines.append(
        f"| S = {TARGET_SHARDS} ({b.member_recipe.epochs}-epoch members): ensemble test accuracy (`{agg}`) within "
        f"{ACC_TARGET_PP:g} points of the default single model ({b.base.epochs} epochs) | {'; '.join(meas) or M} "
        f"| {_verdict(oks, len(oks) == len(rs))} |"
    )
    for against in ("single", "ensemble"):
        meas, oks = [], []
        for r in rs:
            d = dels[(TARGET_SHARDS, r, "one image")]
            base_s = None if d is None else (denom if against == "single" else d["full_retrain_seconds"])
            if d is None or base_s is None:
                meas.append(f"R={r}: {M}")
                continue
            frac = d["wall_seconds"] / base_s
            oks.append(frac <= SINGLE_DELETE_TARGET)
            meas.append(f"R={r}: {_pct(frac)} ({d['wall_seconds']:.1f} s vs {base_s:.1f} s)")
        what = (
            f"retraining the single model without the image ({b.recipe.epochs} epochs, (b) below)"
            if against == "single"
            else "retraining the same ensemble from scratch on the reduced data"
        )
        lines.append(
            f"| S = {TARGET_SHARDS}: one-image deletion ≤ {SINGLE_DELETE_TARGET:.0%} of {what}, wall time "
            f"| {'; '.join(meas) or M} | {_verdict(oks, len(oks) == len(rs))} |"
        )
    return lines


def render(b: Any, approx: dict[tuple[str, str], tuple[float, int]]) -> str:
    args, get = b.args, b.records.get
    grid = [(s, r) for s in args.shards for r in args.slices]
    keys = b.all_keys()
    rows = [x for k in keys if (x := get(k)) is not None]
    single = get({**b.single_key, "unit": "single"})
    timing = get({**b.single_key, "unit": "single_retrain_timing", "image": b.one_image})
    acc = {(s, r): get(b.cell_key(s, r, "accuracy")) for s, r in grid}
    dels = {(s, r, q): get(b.cell_key(s, r, "deletion", request=q)) for s, r in grid for q in REQUESTS}
    agg = args.aggregation
    lines = _header(b, rows, len(keys))
    default_acc = single["default_test_accuracy"] if single else None
    denom = timing["without_one_seconds"] if timing else None
    cpu_denom = timing.get("without_one_cpu_seconds") if timing else None

    # ---- targets
    rs = [r for s, r in grid if s == TARGET_SHARDS]
    lines += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    if not rs:
        lines.append(
            f"| S = {TARGET_SHARDS} targets | S = {TARGET_SHARDS} is not in this run's grid (`--shards`) | – |"
        )
    else:
        lines += _target_rows(b, rs, acc, dels, default_acc, denom)
    done = [d for d in dels.values() if d is not None]
    diffs = [d["max_abs_diff_state_dict"] for d in done]
    out_diffs = [d["max_abs_diff_outputs"] for d in done if d["max_abs_diff_outputs"] is not None]
    exact = f"{sum(d == 0 for d in diffs)}/{len(diffs)} deletions bit-identical" if diffs else M
    if diffs:
        exact += (
            f" (max. \\|Δ\\| over the state dicts {max(diffs):g}; outputs on the first "
            f"{max(d['outputs_compared_on'] for d in done):,} test images {max(out_diffs, default=0):g})"
        )
    oks = [d == 0 for d in diffs] + [d == 0 for d in out_diffs]
    lines.append(
        "| exactness: every deleted ensemble equals the ensemble trained from scratch on the reduced data "
        f"| {exact} | {_verdict(oks, len(diffs) == len(dels))} |"
    )
    lines += [
        "",
        "The primary deletion-cost target is against the single model's retrain: it is what exact deletion "
        "costs without SISA. The second row compares with the ensemble's own full retrain.",
    ]

    # ---- the single model and its retrain, like for like
    lines += ["", "## The single model and its retrain without one image", ""]
    if single:
        lines.append(
            f"Single model ({b.recipe.epochs} epochs, `train_or_load`, seed {args.seed}): test accuracy "
            f"**{single['test_accuracy']:.2f} %** (train {single['train_accuracy']:.2f} %); the default "
            f"single model ({b.base.epochs} epochs): **{default_acc:.2f} %**."
        )
    else:
        lines.append(f"Single model: {M} (not yet measured).")
    lines.append("")
    if timing:
        lines.append(
            f"Timed back to back in one process, both through `unlearnkit.training.train` on "
            f"`bundle.train.subset(...)`, uncached, same recipe ({b.recipe.epochs} epochs) and seed: "
            f"(a) the full training set ({timing['full_samples']:,} sample-passes) **{timing['full_seconds']:.1f} s** "
            f"(CPU {timing['full_cpu_seconds']:.1f} s, load {_fmt(timing.get('full_loadavg_before'), 1)}); "
            f"(b) without image {b.one_image} ({timing['without_one_samples']:,} sample-passes) "
            f"**{timing['without_one_seconds']:.1f} s** (CPU {timing['without_one_cpu_seconds']:.1f} s, load "
            f"{_fmt(timing.get('without_one_loadavg_before'), 1)}); (b)/(a) = "
            f"**{timing['ratio_without_one_to_full']:.3f}**. (b) is the denominator of the single-model targets and "
            "columns: it is the exact deletion without SISA."
        )
        if single:
            lines[-1] += (
                f" The cached single model's entry recorded {single['train_seconds_cached_entry']:.1f} s when it was "
                "trained (another time and load: not compared)."
            )
    else:
        lines.append(f"Single-model retrain timing: {M} (not yet measured).")

    # ---- accuracy
    lines += [
        "",
        "## Test accuracy",
        "",
        "| S | R | ensemble, vote (%) | ensemble, softmax (%) | members' mean (%) | Δ vs default single (pp) "
        "| Δ vs single (pp) | training (s) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    single_acc = single["test_accuracy"] if single else None
    for s, r in grid:
        a = acc[(s, r)]
        if a is None:
            lines.append(f"| {s} | {r} | {M} | {M} | {M} | {M} | {M} | {M} |")
            continue
        dd = M if default_acc is None else f"{a[agg] - default_acc:+.2f}"
        ds = M if single_acc is None else f"{a[agg] - single_acc:+.2f}"
        lines.append(
            f"| {s} | {r} | {a['vote']:.2f} | {a['softmax']:.2f} | {a['members_mean']:.2f} | {dd} | {ds} "
            f"| {a['train_seconds']:.1f} |"
        )
    lines += [
        "",
        f"Δ: the `{agg}` ensemble minus the single model. Training: the ensemble from scratch with its stage "
        "checkpoints written.",
    ]

    # ---- deletion cost
    lines += [
        "",
        "## Cost of a deletion request",
        "",
        "Full retrain = the same SISA ensemble (assignment, seeds, recipe) trained from scratch on the reduced data "
        "(`unlearnkit.sisa.oracle`, timed right after the deletion). Samples = sample-passes (stage size × stage "
        "epochs). The deletion's wall time includes loading its restart checkpoints and writing the new ones; the "
        "full retrain writes none. Single-model retrain = (b) above"
        + (f" ({denom:.1f} s)." if denom else " (not yet measured)."),
        "",
        "| S | R | request | points | shards retrained | samples: fraction of full retrain | deletion (s) "
        "| full retrain (s) | wall: fraction of full retrain | wall: fraction of single-model retrain "
        "| CPU: fraction of single-model retrain | max \\|Δ\\| to oracle |",
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s, r in grid:
        for q in REQUESTS:
            d = dels[(s, r, q)]
            if d is None:
                lines.append(f"| {s} | {r} | {q} | {M} | {M} | {M} | {M} | {M} | {M} | {M} | {M} | {M} |")
                continue
            lines.append(
                f"| {s} | {r} | {q} | {d['points']:,} | {d['shards_retrained']} | {_pct(d['sample_fraction'])} "
                f"| {d['wall_seconds']:.1f} | {d['full_retrain_seconds']:.1f} | {_pct(d['wall_fraction'])} "
                f"| {_pct(d['wall_seconds'] / denom if denom else None)} "
                f"| {_pct(d['cpu_seconds'] / cpu_denom if cpu_denom and 'cpu_seconds' in d else None)} "
                f"| {d['max_abs_diff_state_dict']:g} |"
            )
    lines += [
        "",
        "One image is one random draw (the same image for every configuration and for (b)); the expected sample "
        "fraction over a uniformly drawn image (computed from the partition, no training): "
        + ", ".join(
            f"S={s} R={r}: {_pct(a['single_one_image_expected_sample_fraction'] if a else None)}"
            for (s, r), a in acc.items()
        )
        + ". A random 1 % or a whole class touches every shard, so each costs about a full retrain whatever S and "
        "R: SISA pays off for small, scattered requests only.",
    ]
    lines += _gaps(b, approx)
    return "\n".join(lines) + "\n"


def _gaps(b: Any, approx: dict[tuple[str, str], tuple[float, int]]) -> list[str]:
    args, get = b.args, b.records.get
    cells = [(s, r) for s in args.shards for r in args.slices if s in args.gap_shards]
    lines = [
        "",
        "## Avg gap to the retrained single model",
        "",
        "Avg gap: mean |Δ| of forget, retain and test accuracy and MIA efficacy (pp) to the single model "
        f"retrained without the forget set ({b.recipe.epochs} epochs, seed {args.seed}); "
        "`unlearnkit.evaluation.evaluate` without audits.",
        "",
        "| model | aggregation | forget | FA | RA | TA | MIA-Eff. | avg gap (pp) | avg gap to its SISA oracle (pp) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for spec in GAP_SPECS:
        entries = [("single original (no deletion)", "–", get({**b.single_key, "unit": "gap", "forget": spec}))]
        entries += [
            (f"SISA S={s} R={r}", h, get(b.cell_key(s, r, "gap", forget=spec, scored_as=h)))
            for s, r in cells
            for h in AGGS
        ]
        for name, how, g in entries:
            if g is None:
                lines.append(f"| {name} | {how} | {spec} | {M} | {M} | {M} | {M} | {M} | {M} |")
                continue
            lines.append(
                f"| {name} | {how} | {spec} | {_fmt(g['accuracy_forget'])} | {_fmt(g['accuracy_retain'])} "
                f"| {_fmt(g['accuracy_test'])} | {_fmt(g['mia_efficacy_forget'])} | {_fmt(g['avg_gap'])} "
                f"| {_fmt(g.get('avg_gap_to_sisa_oracle'))} |"
            )
        ref = next((g for _, _, g in entries if g is not None), None)
        if ref is not None:
            lines.append(
                f"| retrained single model | – | {spec} | {_fmt(ref['retrained_accuracy_forget'])} "
                f"| {_fmt(ref['retrained_accuracy_retain'])} | {_fmt(ref['retrained_accuracy_test'])} "
                f"| {_fmt(ref['retrained_mia_efficacy_forget'])} | 0.00 | – |"
            )
    if approx:
        lines += [
            "",
            f"The approximate methods' avg gaps from `{b.approximate.split('/')[-1]}` (mean over its seeds; there "
            "the original and the retrained model use the dataset's default recipe, and the gap is to that "
            "retrained model):",
            "",
            "| method | random:0.1 | class:0 |",
            "|---|--:|--:|",
        ]
        methods = sorted({m for _, m in approx}, key=lambda m: approx.get(("class:0", m), (99.0, 0))[0])
        for m in methods:
            r10, c0 = approx.get(("random:0.1", m)), approx.get(("class:0", m))
            lines.append(f"| `{m}` | {_fmt(r10[0] if r10 else None)} | {_fmt(c0[0] if c0 else None)} |")
    lines += [
        "",
        "SISA's deletion is exact with respect to its own from-scratch ensemble (gap 0 above), but the ensemble is "
        "not the single model: its avg gap to the retrained single model is mostly the accuracy the sharding costs "
        "(compare the single original's own gap, which is what not unlearning at all scores). With `vote` the "
        "output's confidence takes only S + 1 values, so the SVC behind MIA efficacy sees mostly ties and its number "
        "is close to arbitrary; `softmax` scores the same weights with a graded confidence.",
    ]
    return lines
