#!/usr/bin/env bash
# Atelier against PyTorch + diffusers on the same diffusers folder, interleaved runs, the
# faster of each (issue 14's figures). Prints the median UNet step, the decode and peak RSS
# of each, the whole run (load to written picture) and their ratios. Nothing here is a test
# dependency.
#
#   scripts/bench-vs-pytorch.sh MODEL_DIR [SIZE=512] [STEPS=2] [TAESD_DIR] [RUNS=2]
#
# ATELIER: the binary (default target/debug/atelier). For figures worth quoting, build it as
#   a release build generates code but on the test build's dependencies (no second build of
#   them): CARGO_PROFILE_DEV_OPT_LEVEL=3 CARGO_PROFILE_DEV_DEBUG_ASSERTIONS=false
#   CARGO_PROFILE_DEV_OVERFLOW_CHECKS=false cargo build --bin atelier
#   (or `cargo build --release` and ATELIER=target/release/atelier).
# PYTHON: a Python with torch + diffusers + transformers (default python3).
# A random-weight SD 1.5 of the real sizes: python scripts/make-bench-sd15.py OUT.
set -euo pipefail
model=${1:?usage: $0 MODEL_DIR [SIZE] [STEPS] [TAESD_DIR] [RUNS]}
size=${2:-512}
steps=${3:-2}
taesd=${4:-}
runs=${5:-2}
atelier=${ATELIER:-target/debug/atelier}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOME="$work/home"
mkdir -p "$HOME"

# One run: prints "step SECONDS", "decode SECONDS", "rss KB", "total SECONDS".
run_atelier() {
    local extra=()
    [ -n "$taesd" ] && extra=(--decoder tiny --tiny-decoder "$taesd")
    /usr/bin/time -f "rss %M total %e" "$atelier" generate --model "$model" --prompt "a cat" \
        --steps "$steps" --guidance 1 --width "$size" --height "$size" --sampler ddim --seed 1 \
        --no-gallery --out "$work/a.png" --verbose "${extra[@]}" 2>&1 |
        awk '/steps .*median/ { gsub(/\(median /, ""); print "step", $5 / 1000 }
             /^ *decode/ { print "decode", $(NF-1) }
             /^rss/ { print "rss", $2; print "total", $4 }'
}
run_pytorch() {
    local extra=()
    [ -n "$taesd" ] && extra=(--tiny "$taesd")
    /usr/bin/time -f "rss %M total %e" "$python" "$here/benches/pytorch_baseline.py" --model "$model" \
        --size "$size" --steps "$steps" "${extra[@]}" 2>&1 |
        awk '/^step / { s[++n] = $3 } /^decode/ { print "decode", $(NF-1) }
             /^rss/ { print "rss", $2; print "total", $4 }
             END { for (i = 2; i <= n; i++) for (j = i; j > 1 && s[j - 1] > s[j]; j--) {
                       t = s[j]; s[j] = s[j - 1]; s[j - 1] = t }
                   print "step", (n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2) }'
}

for i in $(seq "$runs"); do
    run_atelier | sed 's/^/atelier /' >> "$work/results"
    run_pytorch | sed 's/^/pytorch /' >> "$work/results"
done

# The faster (smaller) of the runs for each tool and figure; a run's step is its median step.
awk -v size="$size" -v steps="$steps" -v decoder="${taesd:+tiny}" '
    { key = $1 " " $2; v = $3 + 0
      if (!(key in best) || v < best[key]) best[key] = v }
    END {
        printf "%dx%d, %d steps, %s decode (faster of the runs)\n", size, size, steps, decoder ? decoder : "full"
        printf "%-14s %12s %12s %8s\n", "", "atelier", "pytorch", "ratio"
        split("step decode total rss", keys, " ")
        for (k = 1; k <= 4; k++) {
            a = best["atelier " keys[k]]; p = best["pytorch " keys[k]]
            unit = keys[k] == "rss" ? " GB" : " s"
            if (keys[k] == "rss") { a /= 1048576; p /= 1048576 }
            printf "%-14s %10.2f%s %10.2f%s %8.2f\n", keys[k], a, unit, p, unit, (p > 0 ? a / p : 0)
        }
    }' "$work/results"
