#!/usr/bin/env bash
# Downloads, into .whl/, the wheels that the GPU box lacks (it has no network): run it here, then
# carry .whl to the box, where benchmarks/gpu_check.sh installs them with --no-index --no-deps.
#
#   bash benchmarks/prepare_gpu_wheels.sh   # -> .whl/*.whl (about 3 MB)
#
# The box's image (Python 3.12, jax 0.11 CUDA, flax, optax, orbax, absl-py, etils, cloudpickle,
# protobuf, psutil, PyYAML, pillow, tqdm, sentencepiece, ...) lacks only these; their own
# dependencies are all already there (see /work/.library/device/KINDS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  ml_collections==1.1.0   # configs (pure python)
  grain==0.2.18           # input pipeline (cp312 manylinux)
  array_record==0.8.6     # shard format (cp312 manylinux)
  portpicker==1.6.0       # imported by grain (pure python)
  tensorboardX==2.6.5     # training metrics (pure python)
)
mkdir -p .whl
for spec in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$spec"
done
ls -l .whl
du -sh .whl
