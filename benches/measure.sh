# Sourced by the benchmark scripts: their tools, the keepsake they time, and
# one way of timing a command.

# prepare COMMAND=PACKAGE...: installs each Debian PACKAGE whose COMMAND is
# missing (/usr/bin/time and b3sum are always wanted), then builds keepsake
# and sets $ks to it.
prepare() {
    local need=() pair
    for pair in b3sum=b3sum /usr/bin/time=time "$@"; do
        command -v "${pair%%=*}" >/dev/null || need+=("${pair#*=}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "Installing ${need[*]}..." >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    "$root/scripts/setup"
    (cd "$root" && cargo build --release --quiet --bin keepsake)
    ks="${CARGO_TARGET_DIR:-$root/target}/release/keepsake"
}

#
# measure SCENARIO TOOL SETUP COMMAND: runs SETUP (untimed) and then COMMAND
# followed by `sync` (timed), $runs times; appends "SCENARIO TOOL MEDIAN_MS
# PEAK_RSS_KIB RUN_MS..." to $results and says it on stderr. SETUP and
# COMMAND are shell snippets; $work holds the scratch files.
measure() {
    local scenario="$1" tool="$2" setup="$3" cmd="$4" times=() rss=0
    for ((i = 0; i < runs; i++)); do
        eval "$setup"
        local t0 t1 r
        t0=$(date +%s%N)
        /usr/bin/time -f %M -o "$work/rss" bash -c "$cmd" >/dev/null 2>"$work/err" || {
            cat "$work/err" >&2
            echo "$tool failed on $scenario" >&2
            exit 1
        }
        sync
        t1=$(date +%s%N)
        times+=("$(((t1 - t0) / 1000000))")
        r=$(tail -n 1 "$work/rss")
        [ "$r" -gt "$rss" ] && rss=$r
    done
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
    echo "$scenario $tool $median $rss ${times[*]}" >>"$results"
    printf '%-7s %-18s median %6d ms  peak RSS %7d KiB  runs: %s\n' "$scenario" "$tool" "$median" "$rss" "${times[*]}" >&2
}
