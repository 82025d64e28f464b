#!/usr/bin/env bash
# Set up dpalbum on a fresh machine, offline but for the package registries: a .venv with the
# pinned stack (requirements.txt + requirements-dev.txt, constrained by requirements.lock).
# Idempotent: re-running with unchanged requirement files does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.dpalbum-setup"
want=$(cat requirements.txt requirements-dev.txt requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)

quiet_pip() {  # pip, minus the per-package "location ignored" noise of local mirrors
  "$VENV/bin/pip" "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: .venv is up to date"
else
  echo "setup: creating $VENV with the pinned stack (a few minutes the first time)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  quiet_pip install -q --upgrade pip
  # torch first, by itself, at its pin. From PyPI, torch==2.13.0 is the CUDA build (GBs of
  # nvidia-* wheels); on a CPU machine set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
  # (before the first setup, or after deleting .venv) to take the CPU build from that index.
  # Unset (CI, the default): torch from the configured indexes, as ever. Dockerfile: same arg.
  quiet_pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    "$(grep '^torch==' requirements.txt)"
  quiet_pip install -q -c requirements.lock -r requirements.txt -r requirements-dev.txt
  quiet_pip install -q --no-deps -e .
  echo "$want" > "$STAMP"
fi

# Offline by default: no telemetry from Kedro, DVC, MLflow or the HF hub.
export KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$VENV/bin/dvc" config --local core.analytics false >/dev/null 2>&1 || true
# DVC remote for releases (README: Keep and restore a release): .dvc-storage/ here (the default
# in .dvc/config, git-ignored), or the folder DPALBUM_DVC_REMOTE names (this machine only).
if [ -n "${DPALBUM_DVC_REMOTE:-}" ]; then
  mkdir -p "$DPALBUM_DVC_REMOTE"
  "$VENV/bin/dvc" remote modify --local storage url "$(cd "$DPALBUM_DVC_REMOTE" && pwd)"
  echo "setup: DVC remote 'storage' -> $DPALBUM_DVC_REMOTE"
else
  mkdir -p .dvc-storage
fi
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
