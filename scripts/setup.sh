#!/usr/bin/env bash
# Set up hierars in ./.venv: pinned dependencies, the package (editable), the `hierars` Jupyter kernel.
# Idempotent: a second run only checks that requirements.txt has not changed since the last install.
# Needs Python 3.11 (python3.11 or python3 on PATH). Nothing else is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${HIERARS_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "setup: Python 3.11 is required (set HIERARS_PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi

stamp=.venv/.hierars-requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned requirements (torch is large; the first run takes a few minutes)"
  # --no-cache-dir: torch and its CUDA libraries are ~5.5 GB in the venv; a second copy in pip's cache can fill a
  # small disk. The filter drops one harmless warning per package about index folders a pip config names but this
  # machine does not have (it buried the real error of a failed install in CI's log); any other message is kept.
  pipi() {
    .venv/bin/python -m pip install --quiet --no-cache-dir "$@" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  }
  pipi --upgrade pip
  pipi -r requirements.txt
  pipi --no-deps -e .
  .venv/bin/python -m ipykernel install --sys-prefix --name hierars --display-name "Python (hierars)" >/dev/null
  echo "$want" > "$stamp"
else
  echo "setup: .venv is up to date"
fi
# DVC: no analytics prompt; the site cache lives under the repo (git-ignored), not in /var/tmp.
export DVC_NO_ANALYTICS=1
