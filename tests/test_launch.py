"""The stage launcher: plain python for one process, torchrun for more."""

from __future__ import annotations

import sys

from pipeline.config import DistributedConfig
from stages.launch import torchrun_command


def test_single_node_uses_standalone_rendezvous():
    command = torchrun_command(
        "stages.train_seg", ["--variant", "oracle"], DistributedConfig(4, 1, "localhost:29500")
    )
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in command and "--standalone" in command
    assert command[-4:] == ["-m", "stages.train_seg", "--variant", "oracle"]


def test_multi_node_uses_c10d_endpoint():
    command = torchrun_command("stages.train_cyclegan", [], DistributedConfig(8, 2, "head:29400"))
    assert "--nnodes=2" in command and "--rdzv_backend=c10d" in command
    assert "--rdzv_endpoint=head:29400" in command and "--standalone" not in command
