#!/usr/bin/env bash
# Sets everything up and runs the app on its built-in sandbox EHR (a real FHIR server on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[demo]' 2> >(grep -v 'is ignored: it is neither' >&2)
exec .venv/bin/ldn-app demo "$@"
