# Source this file: `source scripts/ensure-node.sh`.
# Puts a Node >= 22.12 first on PATH. When the node on PATH is older, installs Node 22 from the npm
# registry's `node` package into .tools/ (git-ignored, reused on later runs). Prints one line naming
# the Node in use. Changes nothing when the machine's Node is already new enough.

__rowfleet_node_ok() {
  # $1: a node binary. True when it is >= 22.12.
  "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=12)?0:1)' 2>/dev/null
}

__rowfleet_ensure_node() {
  local root tools bin
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  tools="$root/.tools"
  bin="$tools/node_modules/.bin"
  if command -v node >/dev/null 2>&1 && __rowfleet_node_ok "$(command -v node)"; then
    echo "rowfleet: using node $(node --version) ($(command -v node))"
    return 0
  fi
  if [ ! -x "$bin/node" ] || ! __rowfleet_node_ok "$bin/node"; then
    echo "rowfleet: node $(node --version 2>/dev/null || echo none) is older than 22.12; installing Node 22 into .tools/" >&2
    mkdir -p "$tools"
    # The `node` package's preinstall fetches the platform package; install that directly as a
    # fallback, since it carries the binary itself and needs no install script.
    npm install --prefix "$tools" --no-save --no-audit --no-fund --loglevel=error node@22 >&2 \
      || npm install --prefix "$tools" --no-save --no-audit --no-fund --loglevel=error "node-linux-$(uname -m | sed 's/x86_64/x64/;s/aarch64/arm64/')@22" >&2
    if [ ! -x "$bin/node" ] && [ -d "$tools/node_modules" ]; then
      mkdir -p "$bin"
      for f in "$tools"/node_modules/node-linux-*/bin/node; do [ -x "$f" ] && ln -sf "$f" "$bin/node"; done
    fi
  fi
  if [ ! -x "$bin/node" ] || ! __rowfleet_node_ok "$bin/node"; then
    echo "rowfleet: could not install Node >= 22.12 into $tools; install Node 22 yourself and retry" >&2
    return 1
  fi
  export PATH="$bin:$PATH"
  hash -r 2>/dev/null || true
  echo "rowfleet: using node $(node --version) ($bin/node)"
}

__rowfleet_ensure_node
