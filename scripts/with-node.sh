#!/usr/bin/env bash
# Runs a command with a Node >= 22.12 first on PATH (see ensure-node.sh), so that `npm test` and
# `npm run demo` work on a machine whose own Node is older.
set -euo pipefail
# shellcheck source=ensure-node.sh
source "$(dirname "${BASH_SOURCE[0]}")/ensure-node.sh" >/dev/null
exec "$@"
