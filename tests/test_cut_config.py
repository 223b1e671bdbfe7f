"""params.yaml's cut section: translators resolve to the mode's paper defaults, overrides win,
and every mistake names its key."""

from __future__ import annotations

import copy

import pytest
import yaml

from pipeline.config import ConfigError, cut_config, parse_params, run_settings
from tests.conftest import REPO_ROOT, TEST_PARAMS


@pytest.fixture(scope="module")
def raw() -> dict:
    """The test settings with both modes named (the shipped settings name none)."""
    data = yaml.safe_load(TEST_PARAMS.read_text())
    data["cut"]["translators"] = {"cut": {"mode": "cut"}, "fastcut": {"mode": "fastcut"}}
    return data


def with_cut(raw: dict, **changes) -> dict:
    data = copy.deepcopy(raw)
    data["cut"].update(changes)
    return data


def test_modes_take_the_paper_defaults(raw) -> None:
    params = parse_params(raw)
    assert params.cut.lambda_nce is None  # the section leaves them to the mode
    cut, fastcut = cut_config(params, "cut"), cut_config(params, "fastcut")
    assert (cut.mode, cut.lambda_nce, cut.nce_idt, cut.flip_equivariance) == (
        "cut", 1.0, True, False
    )  # fmt: skip
    assert (fastcut.mode, fastcut.lambda_nce, fastcut.nce_idt, fastcut.flip_equivariance) == (
        "fastcut", 10.0, False, True
    )  # fmt: skip
    assert cut.translators == {} and fastcut.ngf == params.cut.ngf
    assert cut.nce_layers == (0, 4, 7, 10, 14)


def test_section_values_and_overrides_beat_the_mode_defaults(raw) -> None:
    translators = {
        "fastcut": {"mode": "fastcut"},
        "fastcut_idt": {"mode": "fastcut", "nce_idt": True, "crop": [32, 64], "ngf": 8},
    }
    params = parse_params(with_cut(raw, lambda_nce=2.0, translators=translators))
    assert cut_config(params, "fastcut").lambda_nce == 2.0  # the section's value, not 10
    custom = cut_config(params, "fastcut_idt")
    assert (custom.nce_idt, custom.flip_equivariance, custom.crop, custom.ngf) == (
        True, True, (32, 64), 8
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"unknown translator 'cut'.*fastcut, fastcut_idt"):
        cut_config(params, "cut")


def test_run_settings_of_a_translator_are_concrete_and_exclude_runtime_knobs(raw) -> None:
    settings = run_settings(cut_config(parse_params(raw), "fastcut"))
    assert settings["lambda_nce"] == 10.0 and settings["nce_layers"] == [0, 4, 7, 10, 14]
    assert not {"translators", "threads", "compile", "log_every", "channels_last"} & settings.keys()


def test_the_shipped_params_yaml_has_the_section() -> None:
    shipped = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert parse_params(shipped).cut.translators == {}


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"ngf": -4}, "cut.ngf"),
        ({"ndf": 0}, "cut.ndf"),
        ({"netG": "unet_256"}, "cut.netG"),  # no flat layer list to tap
        ({"mode": "pix2pix"}, "cut.mode"),
        ({"lambda_gan": -1.0}, "cut.lambda_gan"),
        ({"lambda_nce": -1.0}, "cut.lambda_nce"),
        ({"nce_idt": "yes"}, "cut.nce_idt"),
        ({"nce_layers": [0, 4, 4]}, r"cut.nce_layers"),  # not increasing
        ({"nce_layers": [0, 16]}, r"cut.nce_layers"),  # past resnet_6blocks' last block
        ({"nce_layers": []}, r"cut.nce_layers"),
        ({"nce_layers": [0, 1.5]}, r"cut.nce_layers\[1\]"),
        ({"num_patches": 0}, "cut.num_patches"),
        ({"nce_t": 0.0}, "cut.nce_t"),
        ({"netF_nc": 0}, "cut.netF_nc"),
        ({"lr": 2.0}, "cut.lr"),
        ({"beta2": 1.0}, "cut.beta2"),
        ({"decay_from": 10**6}, "cut.decay_from"),
        ({"crop": [63, 128]}, "cut.crop"),
        ({"crop": [256, 512]}, "cut.crop"),  # larger than data.size, and a translator keeps it
        ({"compile": False}, "cut.compile"),
        ({"max_bad_steps": -1}, "cut.max_bad_steps"),
        ({"threads": -1}, "cut.threads"),
        ({"typo_key": 1}, "cut.typo_key"),
        ({"translators": {"fastcut": {"lambda_nce": -1.0}}}, "cut.translators.fastcut.lambda_nce"),
        ({"translators": {"fastcut": {"mode": "fast"}}}, "cut.translators.fastcut.mode"),
        ({"translators": {"fastcut": {"typo": 1}}}, "cut.translators.fastcut.typo"),
        ({"translators": {"big": {"crop": [256, 512]}}}, "cut.translators.big.crop"),
        ({"translators": {"x": {"translators": {}}}}, "cut.translators.x.translators"),
        ({"translators": {"x": 3}}, "cut.translators.x"),
        ({"translators": {"cyclegan": {}}}, "cut.translators"),
        ({"translators": {"2fast": {}}}, "cut.translators"),
        ({"translators": {"fast-cut": {}}}, "cut.translators"),
        # A section value a translator keeps is the section's mistake.
        ({"netG": "resnet_6blocks", "translators": {"a": {"ngf": 4}}, "ndf": -1}, "cut.ndf"),
    ],
)
def test_each_bad_value_is_named(raw, changes: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{key}(?![\w.\[])"):
        parse_params(with_cut(raw, **changes))


def test_a_translator_may_change_the_generator_its_layers_must_fit(raw) -> None:
    translators = {"deep": {"netG": "resnet_9blocks", "nce_layers": [0, 18]}}
    assert cut_config(parse_params(with_cut(raw, translators=translators)), "deep").nce_layers
    translators = {"shallow": {"nce_layers": [0, 18]}}  # resnet_6blocks ends at 15
    with pytest.raises(ConfigError, match=r"cut\.translators\.shallow\.nce_layers"):
        parse_params(with_cut(raw, translators=translators))
