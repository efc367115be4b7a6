"""The Ray executor: a bench's runs as Ray tasks, on a local Ray instance or a cluster (``--executor ray``).

* Each run is one task declaring ``num_cpus`` / ``num_gpus`` (a run that asks for a GPU lands only on a node that
  has one; Ray shows each task only the GPUs it was given, so ``--device auto`` picks that GPU). A task returns
  the record; only the driver writes ``records.jsonl`` (`unlearnkit.bench.runner`), so the resume guarantee is the
  local runner's: a record per finished run, none lost, none duplicated, whatever is killed.
* The models a grid cell shares are trained once, before its runs: one task per distinct original, retrained
  oracle and noise-floor oracle (`unlearnkit.pipeline.prepare_model`), and each run task depends on the tasks of
  its models, so independent trainings run in parallel and every run then loads its models from the cache. The
  cache's per-key lock (`unlearnkit.oracle.entry_lock`) backs this up for the models trained inside runs (the
  extra models of strong audits, ``oracles = K``): no two workers train the same key at once.
* The cache is shared through the filesystem, not the object store: the driver forwards its ``UNLEARNKIT_CACHE``
  (and ``--no-cache``) to every task. On one machine that is simply the same folder; on several machines point
  ``UNLEARNKIT_CACHE`` at a shared filesystem mounted at the same path on every node (NFS, a cluster filesystem).
  Without a shared path each node keeps its own cache and trains the models its runs need itself.
* A task whose worker process dies (killed, out of memory) is retried once by Ray, then recorded as failed with
  the error; a run that raises is failed at once (no retry). Failed runs are not in ``records.jsonl``: rerunning
  the same command retries them. Ctrl-C cancels every task in flight (their workers are stopped) and records
  nothing for them.

Ray is an optional extra (``pip install 'unlearnkit[ray]'``) imported only when this executor runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import signal
import threading
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from .executors import ExecutorHooks, RunOptions, RunOutcome, execute_run
from .spec import Run

INSTALL_HINT = "--executor ray needs Ray: pip install 'unlearnkit[ray]' (or pip install 'ray>=2.9')"
_WAIT_SECONDS = 0.5  # ray.wait in short slices, so Ctrl-C reaches the driver at once
_WORKER: dict[str, Any] = {}  # per worker process: the evaluation cache of the bench it last ran for


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


class RayExecutor:
    """Runs a bench's runs as Ray tasks (see the module docstring).

    Args:
        address: the cluster: ``auto`` joins the one started on this machine with ``ray start``,
            ``ray://HOST:PORT`` a remote one (Ray Client). None does what ``ray.init()`` does: the cluster in
            ``$RAY_ADDRESS`` or one ``ray start`` started here, else a new local instance (all cores). The bench
            disconnects at the end (a local instance it started stops); a Ray already initialised in this process
            (``ray.init`` by the caller) is used as it is and left running.
        max_parallel: at most this many runs in flight (default: as many as the cluster's nodes fit).
        num_cpus, num_gpus: the resources each run declares (default 1 CPU, no GPU).
        device: the bench's ``--device``; checked against ``num_gpus``.
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        max_parallel: int | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        device: str = "auto",
    ) -> None:
        self.address = address
        self.max_parallel = max_parallel
        self.num_cpus = 1.0 if num_cpus is None else num_cpus
        self.num_gpus = 0.0 if num_gpus is None else num_gpus
        self.device = device

    def check(self) -> None:
        """Every setting that cannot work, before any compute (Ray installed, resources, device)."""
        from .spec import resource_ok

        problems = []
        if not resource_ok("num_cpus", self.num_cpus):
            problems.append(f"--num-cpus must be a number > 0 (e.g. 1), got {self.num_cpus!r}")
        if not resource_ok("num_gpus", self.num_gpus):
            problems.append(f"--num-gpus must be a number >= 0 (e.g. 1 or 0.5), got {self.num_gpus!r}")
        mp: object = self.max_parallel  # checked as any object: library callers pass whatever they have
        if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or mp < 1):
            problems.append(f"--max-parallel must be an integer >= 1, got {mp!r}")
        address: object = self.address
        if address is not None and (not isinstance(address, str) or not address.strip()):
            problems.append(f"--address must be auto or ray://HOST:PORT, got {self.address!r}")
        dev = str(self.device)
        if dev.startswith("cuda") and not self.num_gpus:
            problems.append(
                f"--device {dev} with --executor ray needs --num-gpus (e.g. --num-gpus 1): Ray shows a task only the "
                "GPUs it declares"
            )
        elif dev.startswith("cuda:") and dev != "cuda:0":
            problems.append(f"--device {dev}: with --executor ray pass --device cuda (Ray assigns each run its GPU)")
        if self.num_gpus and dev == "cpu":
            problems.append("--num-gpus with --device cpu reserves GPUs no run uses; pass --device auto or cuda")
        if problems:
            raise ConfigError("; ".join(problems))
        if not ray_available():
            raise MissingDependencyError(INSTALL_HINT)

    # ------------------------------------------------------------------------------------------------ driver
    def execute(self, runs: Sequence[Run], opts: RunOptions, hooks: ExecutorHooks) -> None:
        import ray

        owns = not ray.is_initialized()
        if owns:
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,  # workers' logs stay in Ray's session folder; outcomes carry the errors
                    logging_level=logging.WARNING,
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = self.address or "a new local instance"
                raise ConfigError(
                    f"cannot start or reach the Ray cluster ({where}): {' '.join(str(exc).split())[:300]}; start "
                    "one with `ray start --head`, pass --address ray://HOST:PORT, or drop --address for a local one"
                ) from None
        inflight: dict[Any, Run] = {}
        prepared: dict[tuple[Any, ...], Any] = {}
        # Ctrl-C sets a flag that the loop turns into KeyboardInterrupt between two short waits: a SIGINT that lands
        # inside Ray's own calls was sometimes lost there (the driver then finished its runs and exited 0).
        sigints: list[int] = []
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, lambda signum, frame: sigints.append(signum)) if main else None
        try:
            window = self._window(ray)
            _check_workers(ray)
            cache = os.environ.get("UNLEARNKIT_CACHE")
            env = {"cache": os.path.abspath(os.path.expanduser(cache)) if cache else None, "use_cache": _use_cache()}
            if opts.data_dir:  # workers need not share the driver's working directory
                opts = replace(opts, data_dir=os.path.abspath(os.path.expanduser(opts.data_dir)))
            token = uuid.uuid4().hex
            res = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_retries": 1, "retry_exceptions": False}
            run_task = ray.remote(_run_task).options(**res)
            prepare_task = ray.remote(_prepare_task).options(**res)
            queue = deque(runs)
            while queue or inflight:
                while queue and len(inflight) < window and hooks.may_start():
                    run = queue.popleft()
                    deps = []
                    if opts.trains_models and env["use_cache"]:
                        for role in _roles(run, opts):
                            key = _model_key(run, role)
                            if key not in prepared:
                                prepared[key] = prepare_task.remote(run, role, opts, env)
                            deps.append(prepared[key])
                    inflight[run_task.remote(run, opts, env, token, *deps)] = run
                    hooks.started(run)
                if queue and not hooks.may_start():
                    queue.clear()
                if not inflight:
                    break
                if sigints:
                    raise KeyboardInterrupt
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=_WAIT_SECONDS)
                if sigints:
                    raise KeyboardInterrupt
                for ref in done:
                    run = inflight.pop(ref)
                    hooks.finished(_outcome(ray, ref, run))
        except KeyboardInterrupt:
            for ref in [*inflight, *prepared.values()]:
                _cancel(ray, ref)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if owns:
                ray.shutdown()

    def _window(self, ray: Any) -> int:
        """Runs in flight at most: ``max_parallel``, else what the alive nodes fit; refuse resources no node has."""
        nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
        per_node = [
            min(
                math.floor(r.get("CPU", 0) / self.num_cpus + 1e-9),
                math.floor(r.get("GPU", 0) / self.num_gpus + 1e-9) if self.num_gpus else 1 << 30,
            )
            for r in nodes
        ]
        capacity = sum(per_node)
        if capacity < 1:
            most_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
            most_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
            raise ConfigError(
                f"no node of the Ray cluster has {self.num_cpus:g} CPU(s)"
                + (f" and {self.num_gpus:g} GPU(s)" if self.num_gpus else "")
                + f" free to declare (largest: {most_cpu:g} CPUs, {most_gpu:g} GPUs); lower --num-cpus/--num-gpus "
                "or add such a node"
            )
        return self.max_parallel or capacity


def _check_workers(ray: Any) -> None:
    """A worker imports this unlearnkit (same version), or a `ConfigError` before any run is submitted."""
    from .. import __version__

    try:
        theirs = ray.get(ray.remote(_worker_version).options(num_cpus=0, max_retries=0).remote())
    except Exception as exc:
        cause = " ".join(str(exc).split())
        cause = cause[cause.find("No module named") :] if "No module named" in cause else cause[-300:]
        raise ConfigError(
            f"the Ray workers cannot run unlearnkit ({cause}); install this unlearnkit ({__version__}) where the "
            "cluster's workers run (every node), or start the cluster from this environment"
        ) from None
    if theirs != __version__:
        raise ConfigError(
            f"the Ray workers run unlearnkit {theirs}, this driver {__version__}; install the same version on every "
            "node"
        )


def _worker_version() -> str:
    from unlearnkit import __version__
    from unlearnkit.bench import executors  # noqa: F401 - what every run task unpickles

    return __version__


def _use_cache() -> bool:
    from ..settings import model_cache_default

    return model_cache_default()


def _roles(run: Run, opts: RunOptions) -> tuple[str, ...]:
    """The models ``run`` is scored with: original, retrained oracle, and the noise-floor oracle on the first seed."""
    from ..jobs.run import MODEL_ROLES

    return MODEL_ROLES if run.seed == opts.first_seed else MODEL_ROLES[:2]


def _model_key(run: Run, role: str) -> tuple[Any, ...]:
    """What identifies one model of a run (the original does not depend on the forget set)."""
    forget = None if role == "original" else run.forget.spec
    return (role, run.dataset, run.model, repr(sorted(run.model_args.items())), run.manipulation, forget, run.seed)


def _outcome(ray: Any, ref: Any, run: Run) -> RunOutcome:
    """The task's outcome; a task Ray could not finish (its worker died twice, cancelled, lost) becomes a failure."""
    try:
        out = ray.get(ref)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        kind = type(cause if isinstance(cause, BaseException) else exc).__name__
        text = " ".join(str(exc).split())
        return RunOutcome(run, None, 0.0, f"{kind} (Ray): {text}"[:300])
    if not isinstance(out, RunOutcome):
        return RunOutcome(run, None, 0.0, f"the Ray task returned {type(out).__name__}, expected a RunOutcome")
    return out


def _cancel(ray: Any, ref: Any) -> None:
    with contextlib.suppress(Exception):  # already finished, or the cluster is going away: nothing left to stop
        ray.cancel(ref, force=True)


# ------------------------------------------------------------------------------------------------ worker side
def _apply_env(env: dict[str, Any]) -> None:
    if env.get("cache"):
        os.environ["UNLEARNKIT_CACHE"] = env["cache"]


def _run_task(run: Run, opts: RunOptions, env: dict[str, Any], token: str, *models: Any) -> RunOutcome:
    """One run on a worker. ``models``: the outcomes of its model tasks, only waited for (a model that failed to
    train there is trained, or fails with its error, in the run itself)."""
    from ..evaluation import EvaluationCache
    from ..settings import scoped

    _apply_env(env)
    if _WORKER.get("token") != token:  # the runs of one bench on this worker share forward passes
        _WORKER.update(token=token, cache=EvaluationCache())
    with scoped(progress=False, model_cache=bool(env.get("use_cache", True))):
        return execute_run(run, opts, _WORKER["cache"])


def _prepare_task(run: Run, role: str, opts: RunOptions, env: dict[str, Any]) -> str | None:
    """Train (or load) one model of ``run`` into the cache; its error as text, or None."""
    from ..pipeline import prepare_model
    from ..settings import scoped

    _apply_env(env)
    try:
        with scoped(progress=False, model_cache=True):
            prepare_model(
                run.dataset,
                run.model,
                run.forget.arg,
                run.method.name,
                role,
                overrides=dict(run.method.overrides),
                seed=run.seed,
                model_kwargs=dict(run.model_args) or None,
                manipulation=run.manipulation,
                device=opts.device,
                data_dir=opts.data_dir,
            )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


__all__ = ["INSTALL_HINT", "RayExecutor", "ray_available"]
