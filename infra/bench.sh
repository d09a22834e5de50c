#!/usr/bin/env bash
# npm run bench [-- --quick] [--only 1,3] [--out dir]: builds, starts (or reuses) the local
# stack, runs the benchmark scenarios (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
# The project's Node (the `node` dev dependency, Node 24) before the machine's.
export PATH="$PWD/node_modules/.bin:$PATH"
node dist/infra/stack/cli.js up
exec node dist/bench/run.js "$@"
