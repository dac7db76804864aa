#!/usr/bin/env bash
# Creates the development CA in certs-dev/ca (refuses if one exists). Run `npm run build` first.
set -euo pipefail
cd "$(dirname "$0")/.."
exec node dist/cli.js ca init --dir certs-dev/ca --trust-domain "${1:-cluster.local}"
