# lib.sh - what the benchmark scripts share: a temporary folder, processes started
# in the background and stopped by pid on exit, the Release build, and starting a
# discernd on a free loopback port. Sourced, not run.
#
#   source "$root/bench/lib.sh"
#   bench_init discern-mem           # $tmp, $pids, traps; reads $keep_logs
#   build_release discernd loadgen   # unless $build = 0; sets $bin
#   start_discernd "$tmp/a" 'max_connections = 20000'   # sets $dsc_pid, $dsc_port
#
# The caller defines die() and sets $root, $build, $keep_logs, and for discernd
# $durability, $workers, $token, $store_path (a file name inside the folder, or empty
# for no store) and optionally the array $pin_server (a command prefix, e.g. taskset)
# and $start_tenths (how long discernd may take to start, default 50 = 5 s) and
# $discernd_bin (another discernd binary than $bin/discernd).

# bench_init PREFIX: a fresh temporary folder, and cleanup of every pid in $pids on exit.
bench_init() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    pids=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# stop_pid PID: SIGTERM, wait at most 5 s, then SIGKILL; forget it.
stop_pid() {
    local pid=$1 p keep=()
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    pids=("${keep[@]+"${keep[@]}"}")
}

bench_cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do stop_pid "$pid"; done
    if [ "$keep_logs" = 1 ]; then echo "logs kept in $tmp"; else rm -rf "$tmp"; fi
}

# build_release TARGET...: configure and build build-rel/ (Release) unless $build = 0,
# then check that every target's binary is there.
build_release() {
    local b
    bin=$root/build-rel/bin
    if [ "$build" = 1 ]; then
        echo "building Release in build-rel/ ..."
        cmake -S "$root" -B "$root/build-rel" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
            >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; die "cmake configure failed"; }
        cmake --build "$root/build-rel" -j2 --target "$@" >>"$tmp/cmake.log" 2>&1 ||
            { tail -30 "$tmp/cmake.log"; die "build failed"; }
    fi
    for b in "$@"; do
        [ -x "$bin/$b" ] || die "no $b in $bin (drop --no-build)"
    done
}

# start_discernd DIR [CONFIG-LINE...]: discernd with the shipped policies on a free
# 127.0.0.1 port, its config, store and log in DIR; sets $dsc_pid and $dsc_port.
start_discernd() {
    local dir=$1 line
    shift
    mkdir -p "$dir"
    {
        cat <<EOF
listen = "127.0.0.1:0"
unix = ""
http = ""
port_file = "$dir/ports"
policies = "$root/policies"
data = "$root/core/data"
store = "${store_path:+$dir/$store_path}"
durability = "$durability"
workers = $workers
admin_token = "$token"
log_level = "warn"
EOF
        for line in "$@"; do echo "$line"; done
    } >"$dir/discernd.conf"
    "${pin_server[@]+"${pin_server[@]}"}" "${discernd_bin:-$bin/discernd}" --config "$dir/discernd.conf" \
        2>"$dir/discernd.log" &
    dsc_pid=$!
    pids+=("$dsc_pid")
    wait_file "$dir/ports" "$dsc_pid" "$dir/discernd.log" "${start_tenths:-50}" "discernd exited at start"
    dsc_port=$(head -1 "$dir/ports")
    [ -n "$dsc_port" ] || die "discernd wrote no port"
    # TCP callers need a key (require_auth): loadgen's connections authenticate with
    # the admin token, which auth accepts as a key.
    export DISCERN_KEY=$token
}

# wait_file FILE PID LOG TENTHS WHY: wait until FILE has content, at most TENTHS
# tenths of a second; if PID exits first, show LOG and die with WHY.
wait_file() {
    local file=$1 pid=$2 log=$3 tenths=$4 why=$5
    for _ in $(seq "$tenths"); do
        [ -s "$file" ] && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "$why"; }
        sleep 0.1
    done
}

# cpu_ticks PID: utime + stime of a process (all its threads), in clock ticks.
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# cpu_seconds PID: cpu_ticks in seconds.
cpu_seconds() {
    awk -v t="$(cpu_ticks "$1")" -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }'
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# redis_up DIR [redis-server options]: a redis-server on a free 127.0.0.1 port with
# no RDB saves, its files in DIR, run under the array $redis_prefix when set
# (valgrind, taskset); waits at most $redis_tenths (default 50) tenths of a second
# for its PING; sets $redis_pid and $redis_port (stopped by pid on exit).
redis_up() {
    local dir=$1
    shift
    command -v redis-server >/dev/null || die "redis-server not found (scripts/deps.sh)"
    mkdir -p "$dir"
    redis_port=$(free_port)
    "${redis_prefix[@]+"${redis_prefix[@]}"}" redis-server --bind 127.0.0.1 --port "$redis_port" \
        --dir "$dir" --save '' --daemonize no --logfile "$dir/redis.log" "$@" &
    redis_pid=$!
    pids+=("$redis_pid")
    for _ in $(seq "${redis_tenths:-50}"); do
        redis-cli -p "$redis_port" PING >/dev/null 2>&1 && return 0
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    die "redis-server did not start (see $dir/redis.log)"
}
