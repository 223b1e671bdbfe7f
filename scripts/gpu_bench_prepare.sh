#!/usr/bin/env bash
# Bring what `python -m benchmarks gpu` needs onto a GPU machine that has torch but no package
# registry, into git-ignored folders that the device run carries:
#   .whl/  wheels of the packages its image lacks (no dependencies: the image has the rest)
#   .ref/  the reference CycleGAN's models/ and util/, from a checkout or bare clone of
#          junyanz/pytorch-CycleGAN-and-pix2pix (or its fork zenml-io/... at 00d5574)
# Usage: bash scripts/gpu_bench_prepare.sh PATH_TO_REFERENCE_REPOSITORY [COMMIT]
set -euo pipefail
reference="$(cd "$1" && pwd)"
commit="${2:-HEAD}"
cd "$(dirname "$0")/.."
rm -rf .whl .ref
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  segmentation-models-pytorch==0.6.0 kornia==0.9.0 kornia-rs==0.2.0 cityscapesscripts==2.3.0
mkdir -p .ref/pytorch-CycleGAN-and-pix2pix
git -C "$reference" archive "$commit" models util | tar -x -C .ref/pytorch-CycleGAN-and-pix2pix
du -sh .whl .ref
