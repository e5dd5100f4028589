#!/usr/bin/env bash
# README command 2: set up, then run every check: lint, types, and all tests (oracle and kernel tests
# included; as root they use loop devices and mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pnpm run lint
pnpm run typecheck
pnpm run test
