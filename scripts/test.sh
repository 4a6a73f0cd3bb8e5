#!/usr/bin/env bash
# Sets everything up and runs every test: the README's test command (.ci/run runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser test drives Debian's chromium through chromedriver (a test tool's own browser download fails
# here); the session-store tests start their own Debian redis-server on a free port.
missing=()
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  missing+=(chromium chromium-driver)
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian ${missing[*]} for the browser and session-store tests..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed and not root: the tests that need them will be skipped" >&2
  fi
fi

# axe-core (accessibility checks in the browser tests) from the npm registry into .ci-node/, injected by
# Selenium - never from a CDN.
if command -v npm >/dev/null 2>&1 && [ ! -f .ci-node/node_modules/axe-core/axe.min.js ]; then
  npm install --prefix .ci-node --no-audit --no-fund --silent axe-core@4 >/dev/null \
    || echo "note: npm could not install axe-core: the accessibility checks will be skipped" >&2
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]' 2> >(grep -v 'is ignored: it is neither' >&2)
.venv/bin/ruff check .
.venv/bin/mypy  # [tool.mypy] in pyproject.toml: smart_app, 0 errors
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
