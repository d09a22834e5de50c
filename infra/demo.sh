#!/usr/bin/env bash
# The README's main command. Installs, builds, starts the local stack and runs the two-way demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
# The project's Node (the `node` dev dependency, Node 24) before the machine's.
export PATH="$PWD/node_modules/.bin:$PATH"
node dist/infra/stack/cli.js up
if [ -f dist/infra/demo/demo.js ]; then
  exec node dist/infra/demo/demo.js "$@"
fi
node dist/infra/stack/cli.js status
