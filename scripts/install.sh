#!/usr/bin/env bash
# Installs lcow on this host from this checkout (until the packages are published): every public package
# packed as npm would publish it, installed into PREFIX/lib/lcow with its dependencies from the npm
# registry; the commands lcow, dmverity-vhd, lcow-docker-plugin and lcow-containerd-snapshotter linked into
# PREFIX/bin; manual pages and bash/zsh completion under PREFIX/share; the systemd units into UNIT_DIR with
# ExecStart pointing there. What it made is listed in
# PREFIX/lib/lcow/installed-files, which scripts/uninstall.sh removes. Run it again to upgrade.
#
#   bash scripts/install.sh [--prefix DIR] [--unit-dir DIR] [--no-units] [--no-build]
#
# Needs Node.js >= 20.19 and npm (pnpm 10 is installed with npm when missing, to build and pack).
# --prefix: default /usr/local. --unit-dir: default /etc/systemd/system. --no-build: pack what is built.
# The units are installed, not enabled: `systemctl enable --now lcow-docker-plugin` (or the snapshotter).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

prefix=/usr/local
unit_dir=/etc/systemd/system
units=1
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --unit-dir) unit_dir=$2; shift 2 ;;
    --unit-dir=*) unit_dir=${1#*=}; shift ;;
    --no-units) units=0; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) prefix=$PWD/$prefix ;; esac
case "$unit_dir" in /*) ;; *) unit_dir=$PWD/$unit_dir ;; esac

node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || { echo "install: Node.js >= 20.19 is needed (this is $(node --version))" >&2; exit 1; }

node_dir=$(dirname "$(command -v node)")
lib=$prefix/lib/lcow
bin=$prefix/bin
manifest=$lib/installed-files
if [ -e "$manifest" ]; then
  echo "install: replacing the install in $lib"
  bash "$repo/scripts/uninstall.sh" --prefix "$prefix" --keep-services >/dev/null
fi

if [ "$build" = 1 ]; then
  if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version | cut -d. -f1)" != "10" ]; then
    npm install -g pnpm@10 >/dev/null 2>&1
  fi
  pnpm install --frozen-lockfile --reporter=silent
  pnpm run build >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarballs=()
for dir in packages/*/; do
  [ "$(node -p "require('./${dir}package.json').private === true")" = true ] && continue
  tgz=$(cd "$dir" && pnpm pack --pack-destination "$work" | tail -1)
  tarballs+=("$tgz")
done

mkdir -p "$lib" "$bin"
made=()
[ -e "$lib/package.json" ] || {
  printf '{ "name": "lcow-install", "private": true, "description": "lcow, installed by scripts/install.sh" }\n' \
    >"$lib/package.json"
}
npm install --prefix "$lib" --omit=dev --no-audit --no-fund --loglevel=error "${tarballs[@]}" >/dev/null
made+=("$lib/package.json" "$lib/package-lock.json" "$lib/node_modules")

link() { # link NAME PACKAGE-DIR BIN-PATH: PREFIX/bin/NAME -> the package's bin file
  ln -sfn "$lib/node_modules/$2/$3" "$bin/$1"
  made+=("$bin/$1")
}
link lcow @lcow/driver bin.js
link dmverity-vhd @lcow/driver dmverity-vhd.js
link lcow-docker-plugin @lcow/docker-plugin bin.js
link lcow-containerd-snapshotter @lcow/containerd-snapshotter bin.js

# Manual pages (lcow.1, lcow-COMMAND.1) and shell completion, made by the installed command from its table.
while IFS= read -r page; do made+=("$page"); done < <("$bin/lcow" man --out-dir "$prefix/share/man/man1")
mkdir -p "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions"
"$bin/lcow" completion bash >"$prefix/share/bash-completion/completions/lcow"
"$bin/lcow" completion zsh >"$prefix/share/zsh/site-functions/_lcow"
made+=("$prefix/share/bash-completion/completions/lcow" "$prefix/share/zsh/site-functions/_lcow")

if [ "$units" = 1 ]; then
  mkdir -p "$unit_dir"
  for unit in docker-plugin/systemd/lcow-docker-plugin.service \
    containerd-snapshotter/systemd/lcow-containerd-snapshotter.service; do
    name=$(basename "$unit")
    # The commands start with `#!/usr/bin/env node`: the unit's PATH names the node this install used.
    sed -e "s|^ExecStart=/usr/local/bin/|ExecStart=$bin/|" \
      -e "s|^\[Service\]\$|[Service]\nEnvironment=PATH=$node_dir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|" \
      "$lib/node_modules/@lcow/$unit" >"$unit_dir/$name"
    made+=("$unit_dir/$name")
  done
  if [ -d /run/systemd/system ] && [ "$unit_dir" = /etc/systemd/system ]; then systemctl daemon-reload; fi
fi

printf '%s\n' "${made[@]}" "$manifest" >"$manifest"
echo "install: lcow $("$bin/lcow" --version | cut -d' ' -f2) in $lib; commands in $bin$([ "$units" = 1 ] && echo "; units in $unit_dir")"
