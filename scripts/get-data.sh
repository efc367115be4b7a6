#!/usr/bin/env bash
# Make Fashion-MNIST available: already present? Debian package (root + apt)? Official download with checksum?
# Otherwise print both ways and exit non-zero.
set -u
data_dir="${1:-data}"
cli="${2:-unlearnkit}"
have() {
  "${cli%/unlearnkit}/python" - "$data_dir" <<'PY'
import sys
from unlearnkit.data.datasets import find_fashion_mnist
# the folder given (files fetched there) or, when it holds none, the usual places (Debian package, $UNLEARNKIT_DATA)
sys.exit(0 if find_fashion_mnist(sys.argv[1]) or find_fashion_mnist(None) else 1)
PY
}
if have; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "installing Debian package dataset-fashion-mnist" >&2
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
   { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }) || true
  if have; then exit 0; fi
fi
echo "downloading Fashion-MNIST into $data_dir/fashion-mnist (SHA-256 checked)" >&2
if "$cli" fetch fashion_mnist --data-dir "$data_dir/fashion-mnist" >/dev/null && have; then exit 0; fi
cat >&2 <<MSG
Fashion-MNIST is not available. Either
  - install the Debian package:   sudo apt-get install dataset-fashion-mnist
  - or download it:               unlearnkit fetch fashion_mnist --data-dir $data_dir/fashion-mnist
  - or put the four *-ubyte.gz files in a folder and pass --data-dir (or set UNLEARNKIT_DATA).
MSG
exit 1
