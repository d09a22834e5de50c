#!/usr/bin/env bash
# The whole test suite: installs and builds, starts (or reuses) the local stack, runs vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
# Type-check the tests and benchmarks too (the build covers only what ships).
npx tsc -p tsconfig.test.json
if [ "${PGBRIDGE_STACK:-local}" != "containers" ]; then
  node dist/infra/stack/cli.js up
fi
exec npx vitest run "$@"
