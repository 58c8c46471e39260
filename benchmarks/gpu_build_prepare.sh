#!/usr/bin/env bash
# Run on the controller (not the GPU machine): fill the ignored folder .device-carry/ for gpu_build.sh.
#   - llama.cpp from the pinned llama-cpp-python sdist (edgekit/llamacpp/spec.py), trimmed (docs/, models/, tests/
#     removed: ~11 MB)
#   - a wheelhouse of edgekit's runtime deps, for a GPU machine that cannot reach PyPI
# Only 64 MiB travels with `run(carry=[".device-carry"])`; this prints the total.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r SDIST_FILE INNER VERSION < <(python3 -c \
    'from edgekit.llamacpp import spec as S; print(S.SDIST_FILE, S.SDIST_INNER, S.LLAMA_CPP_VERSION)')
SDIST=${1:-/var/cache/edgekit/test/src/$SDIST_FILE}
CARRY=.device-carry
mkdir -p "$CARRY/wheels"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar -xzf "$SDIST" -C "$tmp" --exclude="$INNER/docs" --exclude="$INNER/models" --exclude="$INNER/tests" "$INNER"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/${INNER%/llama.cpp}" -cf - llama.cpp \
    | gzip -n -9 > "$CARRY/llama.cpp-$VERSION-trimmed.tar.gz"
for py in 3.10 3.11 3.12 3.13; do
    python3 -m pip download -q -d "$CARRY/wheels" --only-binary=:all: --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --python-version "$py" \
        "fabric>=3.2,<4" "jinja2>=3.1,<4" "psutil>=5.9" "typer>=0.12,<1" "rich>=13" ninja
done
du -sh "$CARRY" "$CARRY"/*
