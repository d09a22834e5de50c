#!/usr/bin/env bash
# The whole test suite: installs and builds, starts (or reuses) the local stack, runs vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
# The project's Node (the `node` dev dependency, Node 24) before the machine's.
export PATH="$PWD/node_modules/.bin:$PATH"
# Type-check the tests and benchmarks too (the build covers only what ships), and check the formatting (Prettier).
npm run --silent lint
if [ "${PGBRIDGE_STACK:-local}" != "containers" ]; then
  node dist/infra/stack/cli.js up
fi
exec vitest run "$@"
