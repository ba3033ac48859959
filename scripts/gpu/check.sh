#!/usr/bin/env bash
# The GPU check (scripts/gpu/check.py says what it runs): on a CUDA machine, from the repository root,
#
#     bash scripts/gpu/check.sh              # results in $OUT/gpu_check.json and $OUT/gpu_check.log
#     bash scripts/gpu/check.sh --dry-run    # the same steps on the CPU with tiny sizes (CI runs this)
#
# It first installs the wheels carried in .whl/ (scripts/gpu/wheels.sh downloads them) into a temporary
# folder, without an index or dependencies, for a bare image with no network; the project itself runs
# from this source tree (the kernels' C++/CUDA sources and the tests live here, not in a wheel). The whole
# run stops by itself within $CHECK_BUDGET_S seconds (default 480), each step inside its own time box.
# Extra arguments go to check.py (e.g. --steps kernels,generator). PYTHON picks the interpreter (python3).
set -uo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
python=${PYTHON:-python3}
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
dry_run=0
for arg in "$@"; do [ "$arg" = --dry-run ] && dry_run=1; done

if [ "$dry_run" = 0 ]; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d "${TMPDIR:-/tmp}/styleface-site.XXXXXX")
    echo "[check] installing $(ls .whl/*.whl | wc -l) carried wheels into $site"
    "$python" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
      --target "$site" .whl/*.whl || { echo "check.sh: installing the carried wheels failed" >&2; exit 3; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "[check] no wheels in .whl/ (run bash scripts/gpu/wheels.sh where pip can download): using the installed packages"
  fi
  budget=$(( ${CHECK_BUDGET_S:-480} - ($(date +%s) - started) - 20 ))  # 20 s for the summary and the copy back
  exec "$python" scripts/gpu/check.py --out "$out" --budget-s "$budget" "$@"
fi
exec "$python" scripts/gpu/check.py --out "$out" "$@"
