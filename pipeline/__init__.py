"""sim2real: sim-to-real domain adaptation for driving-scene segmentation.

Modules sit in layers; a module imports only from its own layer or the ones below, never above
(tests/test_layers.py checks every import):

1. foundations: config, io, dist, runtime, fingerprint, weights
2. data: readers, prepare, the demo generator, augmentation, tensor conversion (data/)
3. models and maths: nets and their on-disk folders (models/), losses, metrics, fid, colour_stats,
   training-free adaptation (adapt/)
4. inference and tracking: translate, segment, evaluate, translation_scores, tracking,
   pyfunc_model; preflight (the checks before a run, which build nets)
5. training: the run layer and the loops (train/)
6. reporting: report (report/), compare, ablation; blocks, the writer of the generated blocks
   in Markdown pages
7. commands: the user's command lines, one module each (cli/)

Stages (stages/) are the doors DVC calls; they may import any layer.
"""
