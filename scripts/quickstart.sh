#!/usr/bin/env bash
# The README's main command: sets up, then runs ITIT end to end on the built-in shapes world on
# a CPU: VQGAN tokenizer -> token shards -> ITIT training (2% pairs + unpaired images and texts,
# cycle losses) -> samples. Re-running resumes or skips what is done. Outputs: runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/quickstart}
python3 -m pip install -q -e .
export PYTHONWARNINGS=ignore::DeprecationWarning

python3 -m itit.train_tokenizer --config=configs/vqgan_shapes.py:quick --workdir="$RUN/vqgan"
python3 -m itit.prepare --config=configs/prepare_shapes.py:0.02 --out_dir="$RUN/data" \
  --config.image_tokenizer="$RUN/vqgan"
python3 -m itit.train --config=configs/shapes.py:row14,quick --workdir="$RUN/itit" \
  --config.data.dir="$RUN/data"
python3 -m itit.sample --workdir="$RUN/itit" --cycle=3 --num_steps=12 \
  --prompt="a large red circle at the top left" \
  --prompt="there is a small blue square at the bottom right" \
  --prompt="a big yellow cross in the center"

echo
echo "Quick start finished. Outputs:"
echo "  VQGAN tokenizer:   $RUN/vqgan (eval.json: reconstruction exact-scene accuracy)"
echo "  token shards:      $RUN/data"
echo "  ITIT run:          $RUN/itit (eval.json: metrics; images/: samples; tensorboard/)"
echo "  samples:           $RUN/itit/samples (t2i.png, cycle.png)"
