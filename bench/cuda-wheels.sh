#!/usr/bin/env bash
# NVIDIA's CUDA pieces from their PyPI wheels (a package registry, reachable where no CUDA
# download site is): `bash bench/cuda-wheels.sh VERSION DEST PACKAGE...` fetches CUDA
# VERSION (13.0, 13.2...) of each package and unpacks them together under DEST, where
# CUDA 13's wheels put them: DEST/nvidia/cu13/{include,lib}. DEST is replaced.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 VERSION DEST PACKAGE..." >&2; exit 2; }
version=$1 dest=$2
shift 2
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download --quiet --no-deps -d "$wheels" "${@/%/==$version.*}"
rm -rf "$dest"
python3 - "$wheels" "$dest" <<'PY'
import pathlib, sys, zipfile
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    zipfile.ZipFile(wheel).extractall(sys.argv[2])
PY
