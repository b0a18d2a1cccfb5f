"""The shapes-world study's plan: its cells, their budgets and the cycle chains it draws.

CELLS and BUDGETS are the whole plan; `python -m experiments.shapes_study --dry_run` prints the
commands they make.
"""
from experiments.shapes_study import design

# The plan: (name, table-2 row, extra = fraction of the non-paired training scenes used,
# as_pairs = those scenes come as pairs rather than unpaired images / texts, seeds, what[,
# config overrides of the cell[, paired fraction of the cell's data, default the budget's]]).
CELLS = (
    ('row3', 3, 0.0, False, 3, 'pairs only'),
    ('row7', 7, 1.0, False, 3, 'T2T + I2I on unpaired data'),
    ('row10', 10, 1.0, False, 3, 'half cycles'),
    ('row11', 11, 1.0, False, 3, 'full T2I2T cycle'),
    ('row12', 12, 1.0, False, 3, 'full I2T2I cycle'),
    ('row14', 14, 1.0, False, 3, 'full cycles (ITIT)'),
    # Not in the paper: the cycles join at step 400 of 800, once the model's pseudo pairs are
    # better than noise (docs/results/ANALYSIS.md); steps before it are row-3 steps.
    ('row14_warmup', 14, 1.0, False, 3, 'full cycles from step 400 (cycle warm-up)',
     design.SCALING_RECIPE),
    ('all_paired', 3, 1.0, True, 3, 'upper bound: every training scene as a pair'),
    # Figure 5: more unpaired data for ITIT against the same scenes as pairs (x = 0 is row3,
    # x = all is row14_warmup / all_paired). ITIT here is the warm-up recipe
    # (design.SCALING_RECIPE says why); row 14's full-data point is plotted beside the curve.
    ('itit_u10', 14, 0.1, False, 2, 'ITIT (cycles from step 400) with 10% of the unpaired scenes',
     design.SCALING_RECIPE),
    ('itit_u30', 14, 0.3, False, 2, 'ITIT (cycles from step 400) with 30% of the unpaired scenes',
     design.SCALING_RECIPE),
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
QUICK_CELLS = ('row3', 'row14', 'all_paired')  # --quick: these, one seed each

# Per-run budget: `--config.*` overrides of each command. `estimate` is the prior of the cost
# model (seconds = overhead_s + training FLOPs / gflops_per_s); the ETA rescales it by the
# measured time of finished runs.
_EVAL = {'eval.evaluators': 'shapes,cycle', 'eval.shapes_splits': 'test,heldout_test'}
BUDGETS = {
    'default': dict(
        vqgan_config='configs/vqgan_shapes.py', vqgan={},
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
    'quick': dict(
        vqgan_config='configs/vqgan_shapes.py:quick',
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
# Cycle chains (the paper's figure 6) of rows 3 and 14: two seen attribute combinations and a
# held-out one (red triangles are in no training scene).
CHAIN_CELLS = ('row3', 'row14')
CHAIN_PROMPTS = ('a large red circle at the top left',
                 'there is a small blue square at the bottom right',
                 'a small red triangle at the top right')
