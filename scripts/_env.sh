# Shared by scripts/demo and scripts/test: a project virtualenv with the locked versions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "coin-predict needs Python 3.11 (found $("$PY" --version 2>&1))" >&2
  exit 2
fi
apt_install() {  # Debian packages, with sudo when not root
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing Debian packages: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
# Debian's python3.11 has no venv/ensurepip until python3.11-venv is installed.
if [ ! -x .venv/bin/python ] && ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt_install python3-venv "$(basename "$PY")-venv"
fi
stamp=".venv/.installed-$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing locked Python dependencies into .venv" >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.installed-*; touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
