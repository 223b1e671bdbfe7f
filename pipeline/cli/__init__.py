"""The user's commands: one module per command, each parsing its arguments, calling the library
and turning the library's named errors into a one-line message and a non-zero exit.

    translate  sim2real-translate        a folder of images through a trained generator
    segment    sim2real-segment          a folder of images through a trained variant
    compare    sim2real-compare          the variants' scores from MLflow, per dataset
    profile    python -m pipeline.cli.profile   params.yaml checked; a profile as -S arguments
    ablation   python -m pipeline.cli.ablation  CycleGAN ablations and seed reruns (DVC)

The DVC stages' entry points are stages/*.py, not these.
"""
