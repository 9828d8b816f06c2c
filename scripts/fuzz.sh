#!/usr/bin/env bash
# Runs the AFL++ fuzz targets (vnfs/fuzz) for SECONDS each and prints, per
# target, the executions, paths and crashes from AFL's own statistics.
# Fails if any target found a crash (the inputs stay in target/fuzz/out/).
#   scripts/fuzz.sh SECONDS [TARGET...]     (targets: frames acl config mgmt)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames acl config mgmt)

# cargo-afl (and the AFL++ it builds) is the project's fuzzer.
if ! command -v cargo-afl >/dev/null 2>&1; then
    echo "fuzz: installing cargo-afl (crates.io)" >&2
    cargo install cargo-afl --locked --quiet
fi
cargo afl config --build >/dev/null 2>&1 || true

export CARGO_TARGET_DIR=target/fuzz
cargo afl build --release -p sluice-fuzz --quiet
python3 scripts/fuzz_seeds.py target/fuzz/seeds

# No core-dump helper, no CPU governor on this kind of machine.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_QUIET=1
export AFL_NO_AFFINITY=1 AFL_FAST_CAL=1
failed=0
for t in "${targets[@]}"; do
    out=target/fuzz/out/$t
    mkdir -p target/fuzz/out
    # Resume from the corpus a previous run left, else start from the seeds.
    input=target/fuzz/seeds/$t
    [ -d "$out/default/queue" ] && input=-
    timeout $((secs + 60)) cargo afl fuzz -t 5000 -V "$secs" -i "$input" -o "$out" "target/fuzz/release/fuzz-$t" >"target/fuzz/$t.log" 2>&1 || true
    stats=$out/default/fuzzer_stats
    if [ ! -f "$stats" ]; then
        echo "fuzz $t: AFL did not run; see target/fuzz/$t.log" >&2
        tail -20 "target/fuzz/$t.log" >&2
        failed=1
        continue
    fi
    get() { awk -F' *: *' -v k="$1" '$1==k {print $2}' "$stats"; }
    echo "fuzz $t: $(get execs_done) executions in ${secs} s ($(get execs_per_sec)/s), corpus $(get corpus_count), crashes $(get saved_crashes), hangs $(get saved_hangs)"
    if [ "$(get saved_crashes)" != "0" ]; then
        echo "fuzz $t: crashing inputs in $out/default/crashes/" >&2
        failed=1
    fi
done
exit $failed
