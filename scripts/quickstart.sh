#!/usr/bin/env bash
# The README's main command: sets up, then runs ITIT end to end on the laptop level of the
# built-in shapes world on a CPU: VQGAN tokenizer -> token shards (PAIRED of the training scenes
# paired, the rest split into unpaired images and unpaired texts) -> ITIT training with all four
# losses of the paper (table 2, row 14) -> evaluation and samples. Re-running resumes or skips
# what is done. Outputs: runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/quickstart}
PAIRED=${PAIRED:-0.7}
python3 -m pip install -q -e .
export PYTHONWARNINGS=ignore::DeprecationWarning

python3 -m itit.train_tokenizer --config=configs/vqgan_shapes.py:laptop --workdir="$RUN/vqgan"
python3 -m itit.prepare --config=configs/prepare_shapes.py:laptop,"$PAIRED" --out_dir="$RUN/data" \
  --config.image_tokenizer="$RUN/vqgan"
# The preset reads 64 unpaired images and 64 unpaired texts a step; where a stream has fewer
# records (above 73% pairs: 60 + 60 at 75%) each unpaired batch is the largest halving of 64 that
# fits, so every batch holds distinct scenes.
UNPAIRED_BATCH=$(python3 - "$RUN/data/prepare_summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
records = min(summary[stream]['records'] for stream in ('unpaired_image', 'unpaired_text'))
batch = 64
while batch > max(records, 1):
  batch //= 2
print(batch)
PY
)
# The preset's 1,200 steps. T2I2T's captioning pass is a fixed critic here (not the paper's
# cycle, which also trains the captioner on the pseudo images): at this scale T2I draws most
# scenes wrong, and the paper's cycle taught those drawings to the captioner (docs/SHAPES.md).
python3 -m itit.train --config=configs/shapes.py:row14,laptop --workdir="$RUN/itit" \
  --config.data.dir="$RUN/data" --config.cycle.t2i2t_trains_captioner=False \
  --config.batch.unpaired_image="$UNPAIRED_BATCH" --config.batch.unpaired_text="$UNPAIRED_BATCH"
python3 -m itit.sample --workdir="$RUN/itit" --cycle=3 --num_steps=4 --guidance_scale=0 --sample_temperature=0.1 --beam_size=1 \
  --prompt="a large red circle at the top left" \
  --prompt="there is a small blue square at the bottom right" \
  --prompt="a big yellow cross in the center" \
  --prompt="in the top right corner there is a little green triangle"

python3 - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
metrics = json.load(open(f'{run}/itit/eval.json'))
metrics = metrics.get('metrics', metrics)
get = lambda key: next((v for k, v in metrics.items() if k.endswith(key)), float('nan'))
print(f'\nTest scenes (96, never trained on): captioned exactly {get("shapes/i2t_exact"):.1%}, '
      f'drawn exactly {get("shapes/t2i_exact"):.1%}')
PY
echo
echo "Quick start finished. Outputs:"
echo "  VQGAN tokenizer:   $RUN/vqgan (eval.json: reconstruction exact-scene accuracy)"
echo "  token shards:      $RUN/data"
echo "  ITIT run:          $RUN/itit (eval.json: metrics; images/: test-scene sheets; tensorboard/)"
echo "  samples:           $RUN/itit/samples (t2i.png: the prompts drawn; cycle.png: T->I->T chains)"
