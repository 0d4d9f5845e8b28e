#!/usr/bin/env bash
# Builds `atelier` with the `cuda` feature on a machine without a GPU or a CUDA install, from
# NVIDIA's CUDA 13.0 pip wheels (nvcc, headers, cuBLAS, cuRAND, NVRTC) and a link-time stub of
# the driver library. The binary runs where an NVIDIA driver for CUDA 13 and those libraries
# are installed (LD_LIBRARY_PATH to them). This is how the Atelier Mini's GPU fine-tune was
# built; where a CUDA toolkit is installed, `cargo build --release --features cuda` is enough.
#
#   scripts/build-cuda-from-wheels.sh [COMPUTE_CAP]   (default 90: H100/H200)
set -euo pipefail
CAP=${1:-90}
CUDA=${CUDA_HOME_DIR:-$HOME/.cache/atelier/cuda13}
if [ ! -x "$CUDA/bin/nvcc" ] || [ ! -e "$CUDA/lib/libcuda.so" ]; then
  if [ -e "$CUDA" ] && [ ! -e "$CUDA/.atelier-cuda-wheels" ]; then
    echo "$CUDA exists and was not made by this script; set CUDA_HOME_DIR elsewhere" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$tmp" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cublas==13.0.*" \
    "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand==10.4.5.25"
  for w in "$tmp"/*.whl; do unzip -q -o "$w" -d "$tmp/x"; done
  mkdir -p "$(dirname "$CUDA")" && rm -rf "$CUDA" && mv "$tmp/x/nvidia/cu13" "$CUDA" && rm -rf "$tmp"
  touch "$CUDA/.atelier-cuda-wheels"
  (cd "$CUDA/lib" && for l in cublas cublasLt nvrtc cudart; do ln -sf lib$l.so.13 lib$l.so; done \
    && ln -sf libcurand.so.10 libcurand.so)
  # The driver (libcuda.so.1) comes with the GPU's driver, not the toolkit: link against a
  # stub that exports cudarc's driver entry points.
  cargo fetch -q
  version=$(grep -A1 '^name = "cudarc"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$version"/src/driver/sys/mod.rs)
  grep -ohE "pub unsafe fn cu[A-Za-z0-9_]+\(" "$src" | sed 's/pub unsafe fn //; s/(//' | sort -u \
    | sed 's/.*/void &(void){}/' > "$CUDA/lib/cuda-stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/libcuda.so" "$CUDA/lib/cuda-stub.c"
fi
PATH="$CUDA/bin:$PATH" CUDA_ROOT="$CUDA" CUDA_PATH="$CUDA" CUDA_COMPUTE_CAP="$CAP" \
  LIBRARY_PATH="$CUDA/lib" cargo build --release --features cuda --bin atelier
echo "built target/release/atelier (CUDA, sm_$CAP)"
