#!/usr/bin/env bash
# README command 1: set up, then run the main job on its embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pnpm --silent lcow demo "$@"
