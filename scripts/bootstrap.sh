#!/usr/bin/env bash
# Set up this checkout, idempotently: the system build tools, .venv with the project and its dev extra,
# and the patched llama.cpp runtime (built once, then taken from the cache in ~/.cache/ouro-gguf).
# A second run only checks and takes a few seconds.
#
#   scripts/bootstrap.sh [--native] [--tools] [--force]   (options go to `ouro runtime build`)
#
# Environment: PYTHON (interpreter for a new .venv, default python3), OURO_CACHE (build cache).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { echo "bootstrap: $*" >&2; }

# 1. System tools. git and a C++ compiler are required; cmake and ninja come from PyPI through the build
#    backend when the system has none; ccache only makes rebuilds fast.
missing=()
command -v git >/dev/null || missing+=(git)
command -v g++ >/dev/null || missing+=(g++)
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v ccache >/dev/null || missing+=(ccache)
# The aarch64 cross toolchain and emulator: tests/test_cross.py checks the patched runtime on ARM with them.
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "missing ${missing[*]}; install them (Debian: sudo apt-get install ${missing[*]})"
        command -v git >/dev/null && command -v g++ >/dev/null || exit 1
    fi
fi

# 2. The virtualenv, recreated if it no longer runs (e.g. its interpreter was removed).
if ! { [ -x "$PY" ] && "$PY" -c "import sys" 2>/dev/null; }; then
    say "creating $VENV"
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi

# 3. The project, editable, with the dev extra; skipped while pyproject.toml is unchanged since the last run.
stamp="$VENV/.ouro-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$PY" -c "import ouro_cli" 2>/dev/null; then
    say "installing the project into $VENV (pip install -e '.[dev]')"
    "$PY" -m pip install --quiet --disable-pip-version-check -e "$ROOT[dev]"
    echo "$want" > "$stamp"
fi

# 4. The patched runtime: a no-op when the installed one matches patches/.
cd "$ROOT"
"$PY" -m ouro_cli runtime build "$@"

# 5. The aarch64 build of the same patches (cached too), so the test suite does not compile it. A failure
#    here does not stop the set-up: tests/test_cross.py reports it.
if command -v aarch64-linux-gnu-g++ >/dev/null; then
    "$PY" -m ouro_cli runtime cross-build || say "the aarch64 cross build failed (see above); tests/test_cross.py will report it"
fi
