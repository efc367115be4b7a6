"""The one cache service of the library: where the cache lives, how things are hashed, verified tensor entries.

* `cache_dir` — ``$UNLEARNKIT_CACHE`` or ``$XDG_CACHE_HOME/unlearnkit`` (``~/.cache/unlearnkit``).
* `tensors_sha256` — *the* hasher of tensors: sorted names, dtype, shape and the contiguous CPU bytes, so the
  digest does not depend on the device, the memory layout or the insertion order of a state dict.
* `model_sha256` — **the model identity**: `tensors_sha256` of the state dict (parameters and buffers). A record's
  ``models.<role>.sha256``, a cache entry's ``weights_sha256`` (and its file's ``unlearnkit_sha256``) and a ledger
  row's ``model_sha256`` are this value, so the three join on it; `checkpoint_sha256` gives it for a safetensors
  file without building the model. Byte format, SHA-256 over, for each tensor in sorted name order::

      utf8(name) b"|" utf8(str(dtype)) b"|" utf8(str(tuple(shape))) b"|" raw bytes (CPU, contiguous, native order)

  e.g. ``b"fc.bias|torch.float32|(10,)|"`` followed by the 40 bytes of the tensor.
* `dataset_digest` — the same hasher over a dataset's images and labels.
* `TensorCache` — a namespace of safetensors files keyed by a canonical JSON of their inputs. Every entry stores
  the SHA-256 of its tensors in the file's metadata; a read verifies it (once per process per file version), and
  a missing, truncated, unreadable or mismatching entry reads as ``None`` (after a one-line warning naming the
  entry, and deleting the damaged file) so the caller recomputes it. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

SHA_META_KEY = "unlearnkit_sha256"
_ENV = "UNLEARNKIT_CACHE"

# (path, size, mtime_ns) -> sha256 verified in this process: a second read of the same file skips the hashing
_VERIFIED: dict[tuple[str, int, int], str] = {}


class CacheWarning(RuntimeWarning):
    """A damaged or mismatching cache entry was discarded (it will be recomputed)."""


def cache_dir() -> Path:
    """The cache root: ``$UNLEARNKIT_CACHE``, else ``$XDG_CACHE_HOME/unlearnkit``, else ``~/.cache/unlearnkit``.

    Raises `ConfigError` when the path exists and is not a directory (checked before any compute).
    """
    if os.environ.get(_ENV):
        root, source = Path(os.environ[_ENV]).expanduser(), f"${_ENV}"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root, source = Path(base) / "unlearnkit", "the default cache folder"
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"cache folder {root} ({source}) exists but is not a directory; point ${_ENV} at a "
            "folder (or remove that file)"
        )
    return root


def check_cache_writable() -> Path:
    """`cache_dir`, created if needed; a clear `ConfigError` when it cannot be created or written."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the cache folder {root} ({exc.strerror or exc}); set ${_ENV} to a "
            "writable folder or pass --no-cache"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(
            f"the cache folder {root} is not writable; set ${_ENV} to a writable folder or pass --no-cache"
        )
    return root


# ------------------------------------------------------------------------------------------------ hashing
def _update_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over sorted names, dtype, shape and contiguous CPU bytes of each tensor."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(f"{name}|".encode())
        _update_tensor(h, tensors[name])
    return h.hexdigest()


def model_sha256(model: nn.Module) -> str:
    """The model identity: `tensors_sha256` of the state dict (parameters and buffers), independent of the device.

    Plain models and SISA ensembles alike (an ensemble's members, assignment and deleted mask are its state)."""
    return tensors_sha256(model.state_dict())


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """`model_sha256` of the model stored in a safetensors file (its tensors; the file's metadata is not part of
    the identity), read without building the model."""
    from safetensors.torch import load_file

    return tensors_sha256(load_file(str(path)))


def dataset_digest(ds: Any) -> str:
    """SHA-256 over the images' bytes (with dtype and shape) and the labels of a dataset.

    An `ImageDataset` (anything with ``images`` and ``targets`` tensors) is hashed as it is; any other
    map-style Dataset of (image, label) is read item by item first, as float images.
    """
    images, targets = getattr(ds, "images", None), getattr(ds, "targets", None)
    if not (isinstance(images, torch.Tensor) and isinstance(targets, torch.Tensor)):
        items = [ds[i] for i in range(len(ds))]
        images = torch.stack([torch.as_tensor(x) for x, _ in items]).float() if items else torch.zeros(0)
        targets = torch.tensor([int(y) for _, y in items], dtype=torch.long)
    return tensors_sha256({"images": images, "labels": targets.long()})


def canonical_json(obj: Any) -> str:
    from ._io import _json_default

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


# ------------------------------------------------------------------------------------------------ entries
class TensorCache:
    """Verified safetensors entries under ``<root>/<namespace>/<key[:2]>/<key>.safetensors``."""

    def __init__(self, namespace: str, root: Path | None = None, version: int = 1) -> None:
        if not namespace or "/" in namespace or "\\" in namespace or namespace.startswith("."):
            raise ConfigError(f"bad cache namespace {namespace!r}: use a plain folder name")
        self.namespace = namespace
        self.version = int(version)
        self._root = Path(root) if root is not None else None

    @property
    def root(self) -> Path:
        return (self._root if self._root is not None else cache_dir()) / self.namespace

    def key(self, **parts: Any) -> str:
        """SHA-256 of a canonical JSON of ``{namespace, version, **parts}``."""
        payload = {"namespace": self.namespace, "version": self.version, **parts}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ConfigError(f"bad cache key {key!r}: expected a hexadecimal digest from TensorCache.key")
        return self.root / key[:2] / f"{key}.safetensors"

    def _discard(self, path: Path, why: str) -> None:
        warnings.warn(
            f"discarding cache entry {self.namespace}/{path.name}: {why}; recomputing it", CacheWarning, stacklevel=3
        )
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        """The verified tensors of ``key``, or None when missing or damaged (damaged: warned about and deleted)."""
        path = self.path(key)
        tensors, _ = self._load_verified(path)
        return tensors

    def load_with_meta(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """`load`, together with the metadata stored by `save`."""
        tensors, meta = self._load_verified(self.path(key))
        return None if tensors is None else (tensors, meta)

    def _load_verified(self, path: Path) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
        if not path.is_file():
            return None, {}
        ok, why, tensors, meta = verify_file(path)
        if not ok:
            self._discard(path, why)
            return None, {}
        return tensors, meta

    def save(self, key: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str] | None = None) -> Path:
        """Write ``tensors`` (safetensors, atomically) with their SHA-256 and ``meta`` in the file's metadata."""
        path = self.path(key)
        save_verified(
            path,
            tensors,
            meta,
            extra={"unlearnkit_cache_namespace": self.namespace, "unlearnkit_cache_version": str(self.version)},
        )
        return path

    def entries(self) -> list[Path]:
        root = self.root
        return sorted(root.glob("*/*.safetensors")) if root.is_dir() else []


def save_verified(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write a safetensors file atomically, storing the SHA-256 of its tensors under ``unlearnkit_sha256``."""
    from safetensors.torch import save_file

    from ._io import atomic_write

    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {str(k): str(v) for k, v in (meta or {}).items()}
    metadata.update(extra or {})
    metadata[SHA_META_KEY] = tensors_sha256(state)
    # not remembered as verified: file timestamps are coarse, so the first read in a process hashes the file
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def verify_file(path: Path) -> tuple[bool, str, dict[str, torch.Tensor] | None, dict[str, str]]:
    """(ok, reason, tensors, metadata) of a safetensors file whose metadata carries ``unlearnkit_sha256``.

    The hash is computed once per process per (path, size, mtime); later reads only compare the stat.
    """
    from safetensors import safe_open

    try:
        st = path.stat()
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - a safetensors handle, not a dict
    except Exception as exc:
        return False, f"unreadable or truncated ({type(exc).__name__})", None, {}
    stored = meta.get(SHA_META_KEY)
    if not stored:
        return False, "no stored SHA-256 (written by an older version)", None, {}
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(memo) != stored:
        actual = tensors_sha256(tensors)
        if actual != stored:
            return False, "its tensors do not match the stored SHA-256 (modified or damaged)", None, {}
        _VERIFIED[memo] = stored
    return True, "", tensors, meta


# ------------------------------------------------------------------------------------------------ the verb
def _entries(root: Path, namespace: str | None) -> list[Path]:
    """Every stored file of the cache (or of one namespace): safetensors entries and model folders' weights."""
    if not root.is_dir():
        return []
    spaces = [root / namespace] if namespace else sorted(p for p in root.iterdir() if p.is_dir())
    return sorted(f for ns in spaces if ns.is_dir() for f in ns.rglob("*.safetensors"))


@dataclass(frozen=True)
class CacheEntryInfo:
    """One cache entry for listing: its part (namespace), short label, size and, for a model, what it is."""

    namespace: str
    label: str
    size: int
    description: str


def _check_namespace(namespace: str | None) -> None:
    if namespace is not None and (not namespace or "/" in namespace or namespace.startswith(".")):
        raise ConfigError(f"--namespace {namespace!r} is not a cache part; use e.g. models, fisher or filters")


def list_cache(namespace: str | None = None) -> tuple[Path, list[CacheEntryInfo]]:
    """The cache root and its entries (of ``namespace`` only, when given)."""
    _check_namespace(namespace)
    root = cache_dir()
    out = []
    for f in _entries(root, namespace):
        label = f.parent.name if f.name == "model.safetensors" else f.stem
        extra = ""
        meta_path = f.parent / "meta.json"
        if f.name == "model.safetensors" and meta_path.is_file():
            try:
                m = json.loads(meta_path.read_text(encoding="utf-8"))
                arch = (m.get("model") or {}).get("name")
                extra = f"{m.get('role')} {m.get('dataset')}/{arch} seed {m.get('seed')}"
            except (OSError, ValueError):
                extra = "(unreadable meta.json)"
        out.append(CacheEntryInfo(f.relative_to(root).parts[0], label, f.stat().st_size, extra))
    return root, out


def verify_cache(namespace: str | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Verify every entry's SHA-256, removing the damaged ones: (entries checked, [(removed entry, why)])."""
    import shutil

    _check_namespace(namespace)
    root = cache_dir()
    files = _entries(root, namespace)
    removed = []
    for f in files:
        ok, why, _, meta = verify_file(f)
        if ok and f.name == "model.safetensors":
            try:
                stored = json.loads((f.parent / "meta.json").read_text(encoding="utf-8")).get("weights_sha256")
            except (OSError, ValueError):
                ok, why = False, "unreadable meta.json"
            else:
                if stored != meta.get(SHA_META_KEY):
                    ok, why = False, "meta.json does not belong to these weights"
        if not ok:
            target = f.parent if f.name == "model.safetensors" else f
            removed.append((str(target.relative_to(root)), why))
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
    return len(files), removed


def cache_target(namespace: str | None = None) -> Path:
    """The folder `clear_cache` removes: the whole cache or one part of it."""
    _check_namespace(namespace)
    root = cache_dir()
    return root / namespace if namespace else root


def clear_cache(namespace: str | None = None) -> Path | None:
    """Remove every entry (of ``namespace`` only, when given); the folder removed, or None when there was none.

    The caller asks for confirmation first: the library never prompts.
    """
    import shutil

    target = cache_target(namespace)
    if not target.exists():
        return None
    shutil.rmtree(target)
    return target


__all__ = [
    "CacheEntryInfo",
    "CacheWarning",
    "TensorCache",
    "cache_dir",
    "cache_target",
    "check_cache_writable",
    "checkpoint_sha256",
    "clear_cache",
    "dataset_digest",
    "list_cache",
    "model_sha256",
    "save_verified",
    "tensors_sha256",
    "verify_cache",
    "verify_file",
]
