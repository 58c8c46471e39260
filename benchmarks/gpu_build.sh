#!/usr/bin/env bash
# On the lent GPU machine: build llama.cpp with edgekit's own build step (`edgekit build local`) for the GPU's
# CUDA arch (90 on an H100), then run what it built. Results go to $OUT.
#
# Prepare on the controller first (fills the ignored .device-carry/, ~20 MB of the 64 MiB that travels):
#     bash benchmarks/gpu_build_prepare.sh
# Then, from the controller session:
#     run(command="bash benchmarks/gpu_build.sh", carry=[".device-carry"], timeout_s=600)
# Expected (facts from an earlier manual run): configure ~4 s; the CUDA build ~4-5 min with 16 jobs.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
ARCH=${ARCH:-90}
CARRY=.device-carry
SRC=$(ls "$CARRY"/llama.cpp-*-trimmed.tar.gz 2>/dev/null | tail -n1)   # written by gpu_build_prepare.sh
BUILD_TIMEOUT=${BUILD_TIMEOUT:-500}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_build.txt") 2>&1

echo "== machine"; date -u; nproc; free -g | head -2; df -h /opt 2>/dev/null | tail -1
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv | tee "$OUT/gpu.csv"
ls -l /usr/local/cuda/bin/nvcc && /usr/local/cuda/bin/nvcc --version | tail -2
for tool in cmake ninja ccache git g++; do printf '%-7s %s\n' "$tool" "$(command -v $tool || echo MISSING)"; done
[ -f "$SRC" ] || { echo "missing $CARRY/llama.cpp-*-trimmed.tar.gz: run benchmarks/gpu_build_prepare.sh on the controller"; exit 2; }

echo "== python"
PY=python3
if ! $PY -c 'import fabric, typer, rich, jinja2, psutil' 2>/dev/null; then
    $PY -m venv /tmp/ekvenv && /tmp/ekvenv/bin/pip install -q --no-index --find-links "$CARRY/wheels" \
        fabric typer rich jinja2 psutil ninja || { echo "cannot install edgekit's deps offline"; exit 3; }
    PY=/tmp/ekvenv/bin/python
    export PATH="/tmp/ekvenv/bin:$PATH"     # ninja from its wheel if the machine lacks it
fi
export PYTHONPATH=$PWD EDGEKIT_HOME=$OUT/edgekit-home COLUMNS=200
EK="$PY -m edgekit"

echo "== facts"
$EK facts local --cuda-arch "$ARCH" --json > "$OUT/facts.json"; echo "facts rc=$?"
echo "== dry run"
$EK build local --cuda-arch "$ARCH" --llama-src "$SRC" --skip-deps --dry-run 2> "$OUT/dry-run.txt"; echo "dry-run rc=$?"
grep -o -- '-DCMAKE_CUDA_[A-Z]*=[^ ]*' "$OUT/dry-run.txt"

echo "== build (edgekit build local --cuda-arch $ARCH)"
t0=$(date +%s.%N)
timeout "$BUILD_TIMEOUT" $EK build local --cuda-arch "$ARCH" --llama-src "$SRC" --skip-deps --json \
    > "$OUT/build.json" 2> "$OUT/build.stderr"
rc=$?
t1=$(date +%s.%N)
echo "build rc=$rc wall=$(awk "BEGIN{printf \"%.1f\", $t1-$t0}")s"
tail -n 15 "$OUT/build.stderr"
cp /var/log/edgekit/build-*.log "$OUT/" 2>/dev/null
grep -E 'Found CUDAToolkit|CUDA architectures|Including CUDA backend|Build files have been written' \
    /var/log/edgekit/build-*.log 2>/dev/null | head

if [ "$rc" = 0 ]; then
    echo "== run what was built"
    B=/opt/edgekit/llama.cpp/current/bin
    readlink -f /opt/edgekit/llama.cpp/current
    "$B/llama-server" --version 2>&1 | tee "$OUT/version.txt"
    ldd "$B/llama-server" | grep -E 'ggml|llama|cublas|cudart' | tee "$OUT/ldd.txt"
    timeout 60 "$B/llama-cli" --list-devices 2>&1 | tail -5 | tee "$OUT/devices.txt"
    timeout 60 "$B/llama-bench" --list-devices 2>&1 | tail -5
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stamp"]; print({k: s[k] for k in
        ("version","commit","backend","cuda_arch","cuda_version","jobs","duration_s","libggml")})' "$OUT/build.json"
    echo "== second run (must be a no-op in seconds)"
    t0=$(date +%s.%N)
    $EK build local --cuda-arch "$ARCH" --llama-src "$SRC" --skip-deps 2>&1 | tail -6
    echo "no-op wall=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$t0}")s"
fi
exit "$rc"
