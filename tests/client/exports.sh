#!/bin/sh
# exports.sh LIB - libdiscern-client exports its public API and nothing else: every
# dynamic symbol it defines is a dsc_ name of discern/client.h or discern/status.h,
# none is an internal (dsc__*) or the bundled scanner (dsc_rpc_*).
set -eu
syms=$(nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRVW]$/ { print $3 }')
echo "$syms" | grep -qx dsc_client_new || { echo "dsc_client_new is not exported"; exit 1; }
echo "$syms" | grep -qx dsc_status_wire || { echo "dsc_status_wire is not exported"; exit 1; }
bad=$(echo "$syms" | grep -v '^dsc_' || true)
bad="$bad$(echo "$syms" | grep -E '^(dsc__|dsc_rpc_)' || true)"
if [ -n "$bad" ]; then
    echo "exported but not public API:"
    echo "$bad"
    exit 1
fi
