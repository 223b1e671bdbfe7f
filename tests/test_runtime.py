"""`precision: auto` on CPU: bf16 only where oneDNN may use bf16 matrix units."""

from __future__ import annotations

import pytest
import torch

from pipeline import runtime


@pytest.mark.parametrize("isa", ["AVX2", "avx512_core", "avx512_core_vnni", "SSE41"])
def test_a_onednn_cap_below_bf16_units_resolves_auto_to_fp32(monkeypatch, isa: str) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert not runtime.cpu_has_bf16_acceleration()
    assert runtime.resolve_precision("auto", torch.device("cpu")) == "fp32"
    # An explicit setting is the user's: a cap does not override it.
    assert runtime.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_the_older_dnnl_name_caps_too(monkeypatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx2")
    assert not runtime.cpu_has_bf16_acceleration()


@pytest.mark.parametrize("isa", ["ALL", "avx512_core_bf16", "avx512_core_amx", ""])
def test_a_cap_that_allows_bf16_units_leaves_the_hardware_to_decide(monkeypatch, isa) -> None:
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    uncapped = runtime.cpu_has_bf16_acceleration()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert runtime.cpu_has_bf16_acceleration() == uncapped


def test_readmes_avx2_command_makes_auto_pick_fp32(monkeypatch) -> None:
    """The environment the docs give for computing the committed fp32 results again on a CPU with
    AVX-512 turns `precision: auto` into fp32."""
    from tests.doc_pages import docs_text

    text = docs_text()
    line = next(line for line in text.splitlines() if line.startswith("ATEN_CPU_CAPABILITY="))
    assignments = dict(word.split("=", 1) for word in line.split() if "=" in word)
    assert set(assignments) == {
        "ATEN_CPU_CAPABILITY",
        "ONEDNN_MAX_CPU_ISA",
        "MKL_ENABLE_INSTRUCTIONS",
        "MKL_CBWR",
    }
    for name, value in assignments.items():
        monkeypatch.setenv(name, value)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == "fp32"
