"""Download Fashion-MNIST from its official source, checking SHA-256 (for users with internet)."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from .._io import atomic_write
from ..errors import DataNotFoundError

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# SHA-256 of the *decompressed* IDX bytes: robust to re-compression (Debian's package re-gzips the files).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def _sha256(path: Path) -> str:
    """SHA-256 of the decompressed content of a gzip file."""
    import gzip

    h = hashlib.sha256()
    with gzip.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_fashion_mnist(data_dir: str | os.PathLike, base_url: str = FASHION_MNIST_URL) -> Path:
    """Download the four files into ``data_dir`` (skipping ones already present and correct)."""
    folder = Path(data_dir)
    for name, digest in FASHION_MNIST_SHA256.items():
        target = folder / name
        try:
            if target.is_file() and _sha256(target) == digest:
                continue
        except OSError:
            pass  # damaged file: download again

        def _download(tmp: str, name: str = name, digest: str = digest) -> None:
            try:
                urllib.request.urlretrieve(base_url + name, tmp)
            except OSError as exc:
                raise DataNotFoundError(
                    f"cannot download {name} ({exc}); install the Debian package "
                    "dataset-fashion-mnist or pass --data-dir to files you have"
                ) from exc
            try:
                got = _sha256(Path(tmp))
            except OSError as exc:
                raise DataNotFoundError(f"downloaded {name} is not a valid gzip file: {exc}") from exc
            if got != digest:
                raise DataNotFoundError(f"checksum mismatch for {name}: got {got[:12]}…, expected {digest[:12]}…")

        atomic_write(target, _download)
    return folder
