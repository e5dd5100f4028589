#!/usr/bin/env bash
# Removes what scripts/install.sh installed under PREFIX (the files listed in PREFIX/lib/lcow/installed-files,
# and the folders it made that are then empty), after stopping and disabling the units when systemd runs.
# Layers and data roots (/var/lib/...) are left alone: `lcow rm` / `lcow cleanup` are for those.
#
#   bash scripts/uninstall.sh [--prefix DIR]
set -euo pipefail

prefix=/usr/local
keep_services=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --keep-services) keep_services=1; shift ;; # used by install.sh when it replaces an install
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) prefix=$PWD/$prefix ;; esac

manifest=$prefix/lib/lcow/installed-files
[ -e "$manifest" ] || { echo "uninstall: nothing installed in $prefix (no $manifest)" >&2; exit 1; }

units=()
while IFS= read -r f; do
  case "$f" in *.service) units+=("$(basename "$f")") ;; esac
done <"$manifest"
if [ "$keep_services" = 0 ] && [ ${#units[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
  systemctl disable --now "${units[@]}" 2>/dev/null || true
fi

dirs=()
while IFS= read -r f; do
  # Only what install.sh wrote there: absolute paths inside the prefix, or unit files.
  case "$f" in "$prefix"/*|/*.service) ;; *) continue ;; esac
  rm -rf -- "$f"
  dirs+=("$(dirname "$f")")
done <"$manifest"
# The folders left empty, deepest first (never the prefix itself).
for d in "${dirs[@]}" "$prefix/lib/lcow" "$prefix/lib" "$prefix/bin" "$prefix/share/man/man1" "$prefix/share/man" \
  "$prefix/share/bash-completion/completions" "$prefix/share/bash-completion" "$prefix/share/zsh/site-functions" \
  "$prefix/share/zsh" "$prefix/share"; do echo "$d"; done | sort -u -r |
  while IFS= read -r d; do
    if [ "$d" != "$prefix" ] && [ -d "$d" ]; then rmdir --ignore-fail-on-non-empty -- "$d"; fi
  done
if [ "$keep_services" = 0 ] && [ ${#units[@]} -gt 0 ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "uninstall: removed lcow from $prefix"
