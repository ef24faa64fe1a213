#!/usr/bin/env bash
# The wheel works on its own, as a Dask worker on another machine installs it:
# build it, install it (dependencies from the package index) into a fresh venv in
# a temporary folder outside the repository, and from there run `imgdedup --help`,
# `imgdedup demo` and tests/smoke/api_smoke.py with that venv's python.
#
#   bash scripts/ci_wheel_smoke.sh        # PYTHON=python3.12 picks the interpreter
#
# The wheel is built from a copy of the files git tracks or would track, so a
# stale build/ folder or an egg-info of the editable install cannot leak into it.
# pip's download cache is shared with every other install on the machine.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/imgdedup-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "wheel smoke: building the wheel from $repo"
mkdir "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' file; do if [ -e "$file" ]; then printf '%s\0' "$file"; fi; done \
    | xargs -0 cp --parents --target-directory="$work/src")
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/src"
wheel=$(echo "$work"/dist/imgdedup-*.whl)

echo "wheel smoke: installing $(basename "$wheel") into a fresh venv in $work/venv"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$wheel"

cp "$repo/tests/smoke/api_smoke.py" "$work/"
cd "$work"
echo "wheel smoke: imgdedup --help"
"$work/venv/bin/imgdedup" --help >/dev/null
echo "wheel smoke: imgdedup demo"
"$work/venv/bin/imgdedup" demo --out-dir "$work/demo"
echo "wheel smoke: api_smoke.py"
"$work/venv/bin/python" api_smoke.py
echo "wheel smoke: passed"
