#!/usr/bin/env bash
# Bootstrap the checkout (venv, project, patched runtime), then chat: scripts/chat.sh [ouro chat arguments]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
OURO="$ROOT/.venv/bin/ouro"
if ! "$OURO" chat --help >/dev/null 2>&1; then
    echo "chat.sh: this checkout has no \`ouro chat\` command yet; \`$OURO --help\` lists what there is." >&2
    exit 2
fi
exec "$OURO" chat "$@"
