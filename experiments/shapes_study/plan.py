"""The shapes-world study's plan: its cells, their budgets and the cycle chains it draws, at two
levels of the shapes world (`--level`):

- 'laptop' (the default): one object in a 24x24 image, 9 image tokens, 480 training scenes
  (the `laptop` presets of configs/shapes.py, prepare_shapes.py and vqgan_shapes.py). A run
  takes minutes, so every cell has 3 to 5 seeds, and compositional cells ask whether the
  unpaired data teaches the looks no pair shows.
- 'standard': the 32-px world with up to two objects, 64 image tokens and 20,000 training
  scenes, the level of the archived study in docs/results/standard_2026-11-28/.

CELLS, BUDGETS and LEVELS are the whole plan; `python -m experiments.shapes_study --dry_run`
prints the commands they make.
"""
from configs import shapes as shapes_config
from experiments.shapes_study import design

LEVELS = {  # --level: (the budget of a study, the budget of --quick)
    'laptop': ('default', 'quick'),
    'standard': ('standard', 'standard_quick'),
    # The laptop level's world at its earlier recipe (50% pairs, no weight decay), other cells:
    # cheap pseudo-pair synthesis against the paper's (CHEAP_CYCLE_CELLS); its own --out.
    'cheap_cycles': ('cheap_cycles', 'cheap_cycles_quick'),
}

# The paired fraction of the laptop level's 480 training scenes (0.35: 168 pairs, 156 unpaired
# images, 156 unpaired texts), measured at the preset's 1,200 steps with its weight decay 1.0
# (docs/SHAPES.md, "Weight decay"): pairs alone caption 84.4% / 75.0% and draw 54.2% / 38.5% of
# the test scenes exactly (seeds 4 / 5), 46-62 points of drawings below the all-paired bound
# (97.9-99.0% / 100%). At 0.5 pairs alone come within 12-19 drawing points of the bound, too
# close for unpaired data to show; at 0.25 they draw ~19%, and row 14's captions fall below
# theirs on one of two seeds.
LAPTOP_PAIRED_FRACTION = 0.35
# The cheap-cycles study (docs/results/cheap_cycles) of 2026-12-04 ran on the laptop level at
# 50% pairs without weight decay; its budget keeps both so that it stays reproducible.
CHEAP_CYCLES_PAIRED_FRACTION = 0.5

# Per-run budget: `--config.*` overrides of each command. `level` is the shapes world's preset
# that every command names ('' for the standard level's 32-px world). `estimate` is the prior of
# the cost model (seconds = overhead_s + training FLOPs / gflops_per_s); the ETA rescales it by
# the measured time of finished runs.
#
# The laptop level's steps, learning rate, batches and evaluation sizes are configs/shapes.py's
# `laptop` preset, which the train command names; its budgets add only what every run of the
# study needs: the cycle evaluator (the preset's eval_every=0 leaves it off) and the test split
# (the level holds nothing out; compositional cells add 'novel_test', commands.train_overrides).
# No FID: 96 test images of 9 tokens give no useful Inception statistics.
_LAPTOP_EVAL = {'eval.evaluators': 'shapes,cycle', 'eval.shapes_splits': 'test'}
# The cheap-cycles study trained before the preset's weight decay (1.0 since 2026-12-04): its
# budget pins the old value, so its runs resume and reproduce as they started.
_NO_WEIGHT_DECAY = {'optimizer.weight_decay': 0.0}
# The laptop prior: row 3 at batch 64 ran ~10 steps/s (~9.6 GFLOPs a step) on 2 busy cores, and
# a run spent ~30 s outside its steps (start-up, compiling, the final evaluation).
_LAPTOP_ESTIMATE = {'overhead_s': 35.0, 'gflops_per_s': 80.0}
# Cycle chains sample as the level's evaluation does: 4 unguided steps near the mode.
_LAPTOP_SAMPLE = {'cycle': 4, 'num_steps': 4, 'guidance_scale': 0, 'sample_temperature': 0.1,
                  'beam_size': 1}
_EVAL = {'eval.evaluators': 'shapes,cycle', 'eval.shapes_splits': 'test,heldout_test'}
BUDGETS = {
    'default': dict(
        level='laptop', vqgan_config='configs/vqgan_shapes.py:laptop', vqgan={},
        paired_fraction=LAPTOP_PAIRED_FRACTION, prepare={},
        train=_LAPTOP_EVAL,
        fid=False,
        sample=_LAPTOP_SAMPLE,
        estimate=_LAPTOP_ESTIMATE),
    # A smoke run of the laptop level in under 10 minutes on 2 cores: a ~2.5-minute VQGAN
    # (800 steps; the preset's 1500 make every reconstruction exact) and 300 training steps.
    'quick': dict(
        level='laptop', vqgan_config='configs/vqgan_shapes.py:laptop',
        vqgan={'total_steps': 800},
        paired_fraction=LAPTOP_PAIRED_FRACTION, prepare={},
        train={'total_steps': 300, **_LAPTOP_EVAL},
        fid=False,
        sample={**_LAPTOP_SAMPLE, 'cycle': 2},
        estimate=_LAPTOP_ESTIMATE),
    'standard': dict(
        level='', vqgan_config='configs/vqgan_shapes.py', vqgan={},
        paired_fraction=0.02, prepare={},
        # 800 steps at batch 64, where the all-paired shapes model has learned colours (#4's
        # runs). At batch 32 the all-paired bound was still near the generic-caption stage
        # after 300 steps (caption colour 6%) and 800 (17%); batch 64 also decodes the cycles'
        # pseudo pairs at ~1.8x the examples/s of batch 32 on this CPU.
        train={'total_steps': 800, 'batch.paired': 64, 'batch.unpaired_image': 64,
               'batch.unpaired_text': 64, 'optimizer.warmup_steps': 100, 'log_every': 50,
               'checkpoint_every': 200, 'eval_every': 0, 'eval_batches': 2,
               # 4 unguided decoding steps for the 64-token pseudo images (paper: 24, guided).
               'cycle.synthesis_steps': 4, 'cycle.guidance_scale': 0.0,
               'eval.num_examples': 128, 'eval.batch_size': 64, 'eval.num_steps': 8, **_EVAL},
        fid=True,
        sample={'cycle': 4, 'num_steps': 8, 'beam_size': 1},
        estimate={'overhead_s': 90.0, 'gflops_per_s': 70.0}),
    'standard_quick': dict(
        level='', vqgan_config='configs/vqgan_shapes.py:quick',
        vqgan={'total_steps': 300, 'data.num_eval': 200},
        paired_fraction=0.02, prepare={'shapes.num_train': 2000, 'shapes.num_test': 200},
        train={'total_steps': 60, 'batch.paired': 16, 'batch.unpaired_image': 16,
               'batch.unpaired_text': 16, 'optimizer.warmup_steps': 10, 'log_every': 10,
               'checkpoint_every': 30, 'eval_every': 0, 'eval_batches': 1,
               'cycle.synthesis_steps': 2, 'cycle.guidance_scale': 0.0,
               'eval.num_examples': 32, 'eval.batch_size': 16, 'eval.num_steps': 4, **_EVAL},
        fid=False,
        sample={'cycle': 2, 'num_steps': 4, 'beam_size': 1},
        estimate={'overhead_s': 100.0, 'gflops_per_s': 50.0}),
}


def _cheap_cycles_budget(laptop_budget):
  """A laptop budget as the cheap-cycles study ran it: 50% pairs, no weight decay (above)."""
  return dict(laptop_budget, paired_fraction=CHEAP_CYCLES_PAIRED_FRACTION,
              train={**laptop_budget['train'], **_NO_WEIGHT_DECAY})


BUDGETS['cheap_cycles'] = _cheap_cycles_budget(BUDGETS['default'])
BUDGETS['cheap_cycles_quick'] = _cheap_cycles_budget(BUDGETS['quick'])

# The cycle warm-up (design.cycle_warmup says why): the cycles join halfway through training.
LAPTOP_WARMUP = design.cycle_warmup(shapes_config.get_config('laptop').total_steps // 2)
STANDARD_WARMUP = design.cycle_warmup(BUDGETS['standard']['train']['total_steps'] // 2)
_laptop_step, _standard_step = LAPTOP_WARMUP[0][1], STANDARD_WARMUP[0][1]
FIXED_CAPTIONER = (('cycle.t2i2t_trains_captioner', False),)

# The plan: (name, table-2 row, extra = fraction of the non-paired training scenes used,
# as_pairs = those scenes come as pairs rather than unpaired images / texts, seeds, what[,
# config overrides of the cell[, paired fraction of the cell's data, default the budget's]]),
# or a design.Cell (for the fields after those).
LAPTOP_CELLS = (
    ('row3', 3, 0.0, False, 5, 'pairs only'),
    ('row7', 7, 1.0, False, 3, 'T2T + I2I on unpaired data'),
    ('row10', 10, 1.0, False, 3, 'half cycles'),
    ('row11', 11, 1.0, False, 3, 'full T2I2T cycle'),
    ('row12', 12, 1.0, False, 3, 'full I2T2I cycle'),
    ('row14', 14, 1.0, False, 5, 'full cycles (ITIT)'),
    ('row14_warmup', 14, 1.0, False, 3,
     f'full cycles from step {_laptop_step} (cycle warm-up)', LAPTOP_WARMUP),
    # Not in the paper: T2I2T's captioning pass as a fixed critic, so unpaired text trains only
    # T2I (configs/base.py cycle.t2i2t_trains_captioner says why).
    ('row14_critic', 14, 1.0, False, 3, 'full cycles; T2I2T trains T2I only',
     FIXED_CAPTIONER),
    # As many seeds as rows 3 and 14: the gap-closed fraction pairs the three per seed.
    ('all_paired', 3, 1.0, True, 5, 'upper bound: every training scene as a pair'),
    # Figure 5, as at the standard level below. The study at 50% pairs (docs/results/
    # laptop_2026-12-04_wd0) also ran the curve for row14_critic and row14_critic on the
    # compositional data; they left the plan to fit it into 6 hours on 2 cores.
    ('itit_u10', 14, 0.1, False, 3,
     f'ITIT (cycles from step {_laptop_step}) with 10% of the unpaired scenes', LAPTOP_WARMUP),
    ('itit_u30', 14, 0.3, False, 3,
     f'ITIT (cycles from step {_laptop_step}) with 30% of the unpaired scenes', LAPTOP_WARMUP),
    ('pairs_p10', 3, 0.1, True, 3, 'the scenes of itit_u10 as pairs'),
    ('pairs_p30', 3, 0.3, True, 3, 'the scenes of itit_u30 as pairs'),
    # Compositional data: the pairs show half of the colour x shape looks, the unpaired images
    # and texts all of them; evaluated on 'novel_test' too (test scenes with a look no pair
    # shows), where only the unpaired data can have taught the model the look.
    design.Cell('row3_comp', 3, 0.0, False, 3, 'pairs only; the pairs show half the looks',
                compositional=True),
    design.Cell('row14_comp', 14, 1.0, False, 3,
                'full cycles; the pairs show half the looks, the unpaired data all of them',
                compositional=True),
)
STANDARD_CELLS = (
    ('row3', 3, 0.0, False, 3, 'pairs only'),
    ('row7', 7, 1.0, False, 3, 'T2T + I2I on unpaired data'),
    ('row10', 10, 1.0, False, 3, 'half cycles'),
    ('row11', 11, 1.0, False, 3, 'full T2I2T cycle'),
    ('row12', 12, 1.0, False, 3, 'full I2T2I cycle'),
    ('row14', 14, 1.0, False, 3, 'full cycles (ITIT)'),
    # Not in the paper: the cycles join at step 400 of 800, once the model's pseudo pairs are
    # better than noise (docs/results/standard_2026-11-28/ANALYSIS.md); steps before it are
    # row-3 steps.
    ('row14_warmup', 14, 1.0, False, 3,
     f'full cycles from step {_standard_step} (cycle warm-up)', STANDARD_WARMUP),
    ('all_paired', 3, 1.0, True, 3, 'upper bound: every training scene as a pair'),
    # Figure 5: more unpaired data for ITIT against the same scenes as pairs (x = 0 is row3,
    # x = all is row14_warmup / all_paired). ITIT here is the warm-up recipe
    # (design.cycle_warmup says why); row 14's full-data point is plotted beside the curve.
    ('itit_u10', 14, 0.1, False, 2,
     f'ITIT (cycles from step {_standard_step}) with 10% of the unpaired scenes',
     STANDARD_WARMUP),
    ('itit_u30', 14, 0.3, False, 2,
     f'ITIT (cycles from step {_standard_step}) with 30% of the unpaired scenes',
     STANDARD_WARMUP),
    ('pairs_p10', 3, 0.1, True, 2, 'the scenes of itit_u10 as pairs'),
    ('pairs_p30', 3, 0.3, True, 2, 'the scenes of itit_u30 as pairs'),
    # The paired-fraction sweep: row 14 on the pairs of pairs_p10 / pairs_p30 (400 + 10% / 30%
    # of the other 19,600 scenes: 11.8% / 31.4% of 20,000), every other scene unpaired; row 3
    # at those pairs is pairs_p10 / pairs_p30.
    ('row14_p10', 14, 1.0, False, 2, 'full cycles on the pairs of pairs_p10, the rest unpaired',
     (), 0.118),
    ('row14_p30', 14, 1.0, False, 2, 'full cycles on the pairs of pairs_p30, the rest unpaired',
     (), 0.314),
)


def _synthesis(steps: int, guidance: float, reuse: int = 1):
  """Overrides of a cheap-cycles cell: row 14 with the fixed captioner (at the laptop level the
  paper's T2I2T breaks the captioner whatever the synthesis costs, docs/SHAPES.md), pseudo
  images from `steps` parallel-decoding steps with guidance `guidance`, each pseudo pair
  serving `reuse` steps."""
  return FIXED_CAPTIONER + (('cycle.synthesis_steps', steps), ('cycle.guidance_scale', guidance),
                            ('cycle.reuse', reuse))


# Cheap cycles: what cheaper pseudo pairs cost in quality, against the paper's synthesis (24
# guided steps, a fresh pair every step), at the laptop level's budget and data. Pseudo images
# sample at the level's temperature 0.1 with argmax straight-through in every cell (the cost
# does not depend on it). Each row-14 cell's step time is also measured against row 3 at equal
# total batch (`commands.step_time_command`). The paper's synthesis reused for 4 steps is not
# on the front: at ITIT-B it costs 1.52x the paired step's FLOPs, above the 1.5x bar and above
# the preset (synth_s4, 1.44x), so no quality could make it the cheap preset (docs/DESIGN_NOTES.md).
CHEAP_CYCLE_CELLS = (
    ('row3', 3, 0.0, False, 3, 'pairs only'),
    ('all_paired', 3, 1.0, True, 3, 'upper bound: every training scene as a pair'),
    ('synth_paper', 14, 1.0, False, 3,
     "the paper's synthesis: 24 guided steps, a fresh pseudo pair every step",
     _synthesis(24, 2.0)),
    ('synth_s4', 14, 1.0, False, 3, '4 unguided steps (the laptop preset)', _synthesis(4, 0.0)),
    ('synth_s4_r2', 14, 1.0, False, 3, '4 unguided steps, each pseudo pair for 2 steps',
     _synthesis(4, 0.0, 2)),
    ('synth_s4_r4', 14, 1.0, False, 3, '4 unguided steps, each pseudo pair for 4 steps',
     _synthesis(4, 0.0, 4)),
    ('synth_s2', 14, 1.0, False, 3, '2 unguided steps', _synthesis(2, 0.0)),
)
# The cell every cheap setting is compared with: quality within its seeds' noise is the bar.
COST_REFERENCE = 'synth_paper'
# The cell whose synthesis is every ITIT config's `fast_cycles` preset (configs/base.py's
# FAST_CYCLES), chosen from this study's front.
FAST_CYCLES_CELL = 'synth_s4'

CELLS = {'laptop': LAPTOP_CELLS, 'standard': STANDARD_CELLS, 'cheap_cycles': CHEAP_CYCLE_CELLS}
# --quick: these cells, one seed each.
QUICK_CELLS = {'laptop': ('row3', 'row14', 'all_paired'),
               'standard': ('row3', 'row14', 'all_paired'),
               'cheap_cycles': ('row3', 'synth_paper', 'synth_s4_r4')}

# Cycle chains (the paper's figure 6) of rows 3 and 14: one-object prompts, valid at both
# levels. At the standard level the last is a held-out combination (red triangles are in no
# training scene); at the laptop level every look is in the data.
CHAIN_CELLS = ('row3', 'row14')
CHAIN_PROMPTS = ('a large red circle at the top left',
                 'there is a small blue square at the bottom right',
                 'a small red triangle at the top right')


def budget_name(level: str, quick: bool) -> str:
  """The BUDGETS key of a study at `level` (a LEVELS key), with --quick or not."""
  return LEVELS[level][1 if quick else 0]
