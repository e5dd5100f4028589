#!/usr/bin/env bash
# README command 1: set up, then run the main job on its embedded default: `lcow import` of a small
# two-layer image built from this repo's own files, into ./lcow-data, read back through the driver's get().
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pnpm --silent lcow --root "${LCOW_ROOT:-$PWD/lcow-data}" import "$@"
pnpm --silent lcow --root "${LCOW_ROOT:-$PWD/lcow-data}" ls
