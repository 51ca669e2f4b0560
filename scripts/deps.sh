#!/usr/bin/env bash
# deps.sh - install the Debian packages discern needs to build, test and run.
# Installs only what is missing, so it is cheap to call before every build.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  liblua5.4-dev libevent-dev libmsgpack-dev libjansson-dev libsqlite3-dev libssl-dev
  libcriterion-dev sqlite3 python3 python3-msgpack
  redis-server redis-tools util-linux
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
