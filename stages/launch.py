"""Run a stage module in this process, or under torchrun when params.yaml asks for more than one.

`python -m stages.launch stages.train_seg --variant oracle --out models/seg/oracle` runs the module
as `python -m` would when `distributed.nproc_per_node * distributed.nnodes == 1`, and otherwise
hands it to `torchrun` with the node/process counts and rendezvous endpoint from params.yaml.
"""

from __future__ import annotations

import os
import runpy
import sys

from pipeline.config import DistributedConfig, load_params


def torchrun_command(module: str, args: list[str], config: DistributedConfig) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run"]
    command += [f"--nnodes={config.nnodes}", f"--nproc_per_node={config.nproc_per_node}"]
    if config.nnodes > 1:
        command += ["--rdzv_backend=c10d", f"--rdzv_endpoint={config.rdzv_endpoint}"]
    else:
        command += ["--standalone"]
    return [*command, "-m", module, *args]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].startswith("stages."):
        raise SystemExit("usage: python -m stages.launch stages.<stage> [stage arguments...]")
    module, args = argv[0], argv[1:]
    config = load_params().distributed
    if config.nproc_per_node * config.nnodes > 1:
        command = torchrun_command(module, args, config)
        os.execv(command[0], command)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
