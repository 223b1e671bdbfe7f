"""params.yaml validation: every kind of mistake fails fast and names the key."""

from __future__ import annotations

import copy
import dataclasses
import shlex
import typing
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    TRAIN_CLASS_NAMES,
    ConfigError,
    Params,
    apply_profile,
    check_paths,
    load_params,
    load_yaml,
    parse_params,
    profile_arguments,
    profile_params,
    random_init_warning,
    run_settings,
)
from pipeline.data.labels import CLASS_NAMES
from tests.conftest import REPO_ROOT, TEST_PARAMS


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(TEST_PARAMS.read_text())


def test_repo_params_load():
    params = load_params(TEST_PARAMS)
    assert params.data.size == (128, 256)
    assert list(params.train_seg.variants) == [
        "source_only",
        "fda",
        "cyclegan",
        "source_st",
        "cyclegan_st",
        "oracle",
    ]
    assert params.train_seg.variants["fda"].fda_beta > 0


def _set(raw: dict, dotted: str, value):
    data = copy.deepcopy(raw)
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

BAD = [
    ("cyclegan.ngf", "32", "cyclegan.ngf"),  # wrong type
    ("cyclegan.ngf", -4, "cyclegan.ngf"),  # out of range
    ("cyclegan.lr", True, "cyclegan.lr"),  # bool is not a number
    ("cyclegan.netG", "resnet_12blocks", "cyclegan.netG"),  # unknown architecture
    ("cyclegan.gan_mode", "wgan", "cyclegan.gan_mode"),
    ("cyclegan.crop", [63, 128], "cyclegan.crop"),  # not a multiple of 4
    ("cyclegan.crop", [64], "cyclegan.crop"),  # wrong length
    ("cyclegan.decay_from", 10**6, "cyclegan.decay_from"),  # past iters
    ("cyclegan.typo_key", 1, "cyclegan.typo_key"),  # unknown key
    ("data.size", [-128, 256], "data.size"),  # negative size
    ("data.source.kind", "mapillary", "data.source.kind"),
    ("data.target.kind", "synthia", "data.target.kind"),
    ("evaluate.classes", 17, "evaluate.classes"),
    ("evaluate.classes", "16", "evaluate.classes"),
    ("demo_data.synthia", "yes", "demo_data.synthia"),
    ("cyclegan.compile", False, "cyclegan.compile"),  # YAML's bare `off`
    ("translate.workers", 0, "translate.workers"),
    ("data.source.root", "", "data.source.root"),
    ("train_seg.optimizer", "lamb", "train_seg.optimizer"),
    ("train_seg.crop", [100, 256], "train_seg.crop"),
    ("train_seg.scale", [1.5, 0.5], "train_seg.scale"),
    ("train_seg.variants.fda.fda_beta", 0.7, "train_seg.variants.fda.fda_beta"),
    ("train_seg.variants.oracle.colour", "x", "train_seg.variants.oracle.colour"),
    ("train_seg.variants.oracle.images", _DELETE, "train_seg.variants.oracle.images"),
    ("demo_data.n_source", 0, "demo_data.n_source"),
    ("prepare.workers", 0, "prepare.workers"),
    ("translate.batch", "big", "translate.batch"),
    ("tracking", _DELETE, "tracking"),
    ("unknown_section", {}, "unknown_section"),
]


@pytest.mark.parametrize(
    ("key", "value", "named"),
    BAD,
    ids=[f"{key}={'<deleted>' if value is _DELETE else repr(value)}" for key, value, _ in BAD],
)
def test_bad_value_names_the_key(raw, key, value, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_params(_set(raw, key, value))


def test_error_says_what_is_allowed(raw):
    with pytest.raises(ConfigError) as err:
        parse_params(_set(raw, "cyclegan.netG", "resnet_12blocks"))
    assert "resnet_9blocks" in str(err.value) and "resnet_12blocks" in str(err.value)


def test_synthia_source_and_protocols_are_accepted(raw):
    params = parse_params(_set(_set(raw, "data.source.kind", "synthia"), "evaluate.classes", 13))
    assert params.data.source.kind == "synthia" and params.evaluate.classes == 13
    with pytest.raises(ConfigError) as err:
        parse_params(_set(raw, "evaluate.classes", 17))
    assert "19, 16, 13" in str(err.value)


def test_crop_bigger_than_image_is_refused(raw):
    with pytest.raises(ConfigError, match=r"cyclegan\.crop"):
        parse_params(_set(raw, "cyclegan.crop", [256, 512]))


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_configs_are_frozen(raw):
    params = parse_params(raw)
    with pytest.raises(AttributeError):
        params.cyclegan.ngf = 8  # type: ignore[misc]


def _sections(cls: type) -> list[type]:
    """`cls` and every config dataclass reachable through its fields."""
    found = [cls]
    for hint in typing.get_type_hints(cls).values():
        for arg in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(arg) and arg not in found:
                found += [c for c in _sections(arg) if c not in found]
    return found


def test_params_yaml_is_the_one_source_of_defaults() -> None:
    """A dataclass default exists only where a key may be absent altogether (an optional list
    file, FDA off); every tunable value comes from params.yaml."""
    absent = {
        ("DatasetSpec", "list_file"),
        # Layout settings only some kinds read (the folder layout's folders, the split names).
        *(
            ("DatasetSpec", name)
            for name in (
                "label_map",
                "images",
                "labels",
                "image_suffix",
                "label_suffix",
                "train_split",
                "val_split",
            )
        ),
        ("VariantSpec", "fda_beta"),
        ("VariantSpec", "fda_style"),
        ("VariantSpec", "fda_entropy"),
        ("VariantSpec", "self_training"),
        ("VariantSpec", "warm_start"),
        ("VariantSpec", "target_labels"),
        ("SelfTrainingSpec", "mic"),
        ("SelfTrainingSpec", "feature_distance"),
    }
    for cls in _sections(Params):
        for spec in dataclasses.fields(cls):
            has_default = (
                spec.default is not dataclasses.MISSING
                or spec.default_factory is not dataclasses.MISSING
            )
            assert has_default == ((cls.__name__, spec.name) in absent), (cls.__name__, spec.name)


def test_run_settings_leave_out_runtime_knobs() -> None:
    params = load_params(TEST_PARAMS)
    cyclegan = run_settings(params.cyclegan)
    assert {"lr", "netG", "crop", "precision", "seed"} <= cyclegan.keys()
    assert not {"threads", "log_every", "checkpoint_every", "compile"} & cyclegan.keys()
    assert cyclegan["crop"] == list(params.cyclegan.crop)  # comparable with a saved copy
    train_seg = run_settings(params.train_seg)
    assert "variants" not in train_seg and "lr" in train_seg


def test_the_real_data_profile_is_valid_and_prints_dvc_arguments(tmp_path) -> None:
    """The published-scale profile applied over params.yaml passes the validator; its changes
    come out as `dvc exp run -S` arguments, one per line, values in YAML flow syntax."""
    profile = REPO_ROOT / "profiles" / "gta5_cityscapes.yaml"
    arguments = profile_arguments([profile], TEST_PARAMS)
    assert "-S cyclegan.netG=resnet_9blocks" in arguments
    assert "-S cyclegan.crop=[400,400]" in arguments
    assert "-S train_seg.crop=[512,512]" in arguments
    assert "-S train_seg.variants.fda.fda_beta=0.01" in arguments
    # FDA's multi-band transfer: its two other betas and the average of the three.
    assert "-S +train_seg.variants.fda_b09.fda_beta=0.09" in arguments
    assert '-S +train_seg.ensembles.fda_mbt.members=["fda","fda_b05","fda_b09"]' in arguments
    # Entries a profile adds (a translator, a variant) take DVC's `+` for a new key.
    shipped = yaml.safe_load(TEST_PARAMS.read_text())
    shipped["cut"]["translators"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped))
    benchmark = profile_arguments([REPO_ROOT / "profiles/benchmark.yaml"], tmp_path / "params.yaml")
    assert "-S +cut.translators.fastcut.mode=fastcut" in benchmark
    assert "-S +train_seg.variants.cut.images=data/translated_cut" in benchmark
    assert "-S train_seg.iters=2400" in benchmark
    # The method variants, applied after it: MIC's settings and a warm start on DAFormer's
    # schedule (its block's defaults), beside cyclegan_st.
    methods = REPO_ROOT / "profiles/benchmark_methods.yaml"
    assert "-S +train_seg.variants.cyclegan_st_warm.warm_start.init_from=cyclegan" in (
        profile_arguments(
            [REPO_ROOT / "profiles/benchmark.yaml", methods], tmp_path / "params.yaml"
        )
    )
    with_methods = parse_params(apply_profile(shipped, yaml.safe_load(methods.read_text())))
    assert with_methods.train_seg.variants["cyclegan_mic"].step == "mic"
    assert with_methods.train_seg.schedule("cyclegan_st_warm") == (0.0375, 10.0)
    # One argument each for xargs: spaces only inside quotes (the thing classes' names).
    assert all(len(shlex.split(argument.removeprefix("-S "))) == 1 for argument in arguments)
    assert (
        "-S +train_seg.variants.source_st.self_training.feature_distance.classes='"
        '["traffic light","traffic sign","person"' in " ".join(arguments)
    )
    changes = yaml.safe_load(profile.read_text())
    params = yaml.safe_load(TEST_PARAMS.read_text())
    merged = parse_params(apply_profile(params, changes))
    assert (merged.cyclegan.ngf, merged.cyclegan.ndf, merged.data.size) == (64, 64, (512, 1024))
    # CycleGAN's iterations are whole epochs of GTA5 (24,966 frames) at the profile's batch.
    assert merged.cyclegan.iters * merged.cyclegan.batch == 8 * 24_966
    # Segmentation: DAFormer's recipe on its MiT-B5, from a local weights file.
    seg = merged.train_seg
    assert (seg.arch, seg.encoder, seg.iters, seg.lr) == ("Segformer", "mit_b5", 40_000, 6e-5)
    assert (seg.warmup * seg.iters, seg.head_lr_mult) == (1500, 10.0)
    assert seg.encoder_weights is not None
    assert seg.no_weight_decay == ("norm", "pos_block") and seg.scale == (1.0, 1.0)
    # Its self-training variants: DAFormer's alpha, crop rules, pseudo-label crop (15 and 120
    # of its 512 rows) and feature distance on its thing classes' train ids, on both.
    for name in ("source_st", "cyclegan_st"):
        st = seg.variants[name].self_training
        assert (st.ema_decay, st.rare_class_min_crop_ratio, st.crop_max_class_share) == (
            0.999,
            0.5,
            0.75,
        )
        rows = (st.pseudo_label_ignore_top * 512, st.pseudo_label_ignore_bottom * 512)
        assert rows == (15, 120)
        distance = st.feature_distance
        ids = [CLASS_NAMES.index(name) for name in distance.classes]
        assert (distance.weight, distance.min_class_share, ids) == (
            0.005,
            0.75,
            [6, 7, 11, 12, 13, 14, 15, 16, 17, 18],
        )

    bad = tmp_path / "bad.yaml"
    bad.write_text("cyclegan: {crop: [400, 401]}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml applied over .*cyclegan\.crop"):
        profile_arguments([bad], TEST_PARAMS)
    bad.write_text("cyclegan: {ngf: 64}\nsegmentation: {crop: [1, 2]}\n")
    with pytest.raises(ConfigError, match=r"segmentation\.crop: params\.yaml has no section"):
        profile_arguments([bad], TEST_PARAMS)


def test_numbers_dvc_writes_without_a_dot_are_numbers(tmp_path) -> None:
    """DVC writes `-S train_seg.lr=6e-05` (or 0.00006, 6.0E-05) back as `lr: 6e-05`, a YAML 1.2
    float that YAML 1.1 reads as a string; the settings check reads it as DVC meant it."""
    text = TEST_PARAMS.read_text()
    assert "\n  lr: 0.001\n" in text
    for written, value in (("6e-05", 6e-05), ("1e-4", 1e-4), ("+2E-3", 0.002), (".5e-1", 0.05)):
        path = tmp_path / "params.yaml"
        path.write_text(text.replace("\n  lr: 0.001\n", f"\n  lr: {written}\n", 1))
        assert load_params(path).train_seg.lr == value, written
    # Strings stay strings: a name that only looks like a number's tail.
    assert load_yaml("a: e5\nb: 1e\nc: '6e-05'\nd: 10\n") == {
        "a": "e5",
        "b": "1e",
        "c": "6e-05",
        "d": 10,
    }


def test_the_users_overrides_win_over_the_profiles_and_come_out_once() -> None:
    profile = REPO_ROOT / "profiles" / "gta5_cityscapes.yaml"
    arguments = profile_arguments(
        [profile],
        TEST_PARAMS,
        ["cyclegan.iters=10", "cyclegan.decay_from=5", "data.source.root=/data/my sim"],
    )
    assert [a for a in arguments if a.startswith("-S cyclegan.iters=")] == ["-S cyclegan.iters=10"]
    # A root with a space is quoted for xargs, which splits on blanks.
    assert "-S data.source.root='/data/my sim'" in arguments
    assert "-S train_seg.lr=6e-05" in arguments  # the profile's own values are still there
    merged = profile_params([profile], TEST_PARAMS, ["cyclegan.iters=10", "cyclegan.decay_from=5"])
    assert (merged.cyclegan.iters, merged.cyclegan.ngf) == (10, 64)
    # Profiles apply in order: the second's values replace the first's.
    benchmark, methods = (
        REPO_ROOT / "profiles/benchmark.yaml",
        REPO_ROOT / "profiles/benchmark_methods.yaml",
    )
    both = profile_params([benchmark, methods], TEST_PARAMS, ["train_seg.iters=7"])
    assert "cyclegan_mic" in both.train_seg.variants and "cut" in both.cut.translators
    assert both.train_seg.iters == 7
    with pytest.raises(ConfigError, match=r"-S overrides applied over .*cyclegan\.iters = 'ten'"):
        profile_arguments([profile], TEST_PARAMS, ["cyclegan.iters=ten"])
    with pytest.raises(ConfigError, match=r"override 'cyclegan\.iters': expected KEY=VALUE"):
        profile_arguments([profile], TEST_PARAMS, ["cyclegan.iters"])


def _with_mic_and_warm_start(raw: dict) -> dict:
    """params.yaml with the opt-in cyclegan_mic variant, warm-started from cyclegan."""
    data = copy.deepcopy(raw)
    variants = data["train_seg"]["variants"]
    mic = copy.deepcopy(variants["cyclegan_st"])
    mic["self_training"]["mic"] = {"mask_block_size": 8, "mask_ratio": 0.7, "weight": 1.0}
    mic["warm_start"] = {"init_from": "cyclegan", "warmup": 0.0375, "head_lr_mult": 10.0}
    variants["cyclegan_mic"] = mic
    return data


def test_the_opt_in_mic_variant_parses_and_names_its_step(raw):
    seg = parse_params(_with_mic_and_warm_start(raw)).train_seg
    steps = {name: spec.step for name, spec in seg.variants.items()}
    assert steps["cyclegan_mic"] == "mic" and steps["cyclegan_st"] == "dacs"
    assert steps["oracle"] == steps["fda"] == "supervised"
    mic = seg.variants["cyclegan_mic"]
    assert mic.self_training.mic.mask_ratio == 0.7 and mic.warm_start.init_from == "cyclegan"
    # A warm start runs on its block's schedule (DAFormer's here); the variants that start from
    # scratch keep train_seg's.
    assert seg.schedule("cyclegan_mic") == (0.0375, 10.0)
    assert seg.schedule("cyclegan_st") == (seg.warmup, seg.head_lr_mult) == (0.0, 1.0)
    # params.yaml documents the entry, commented out: the same settings as tested here.
    text = (TEST_PARAMS).read_text()
    assert "#     mic: {mask_block_size: 8, mask_ratio: 0.7, weight: 1.0}" in text


MIC = "train_seg.variants.cyclegan_mic.self_training.mic"
WARM = "train_seg.variants.cyclegan_mic.warm_start"
ST = "train_seg.variants.cyclegan_mic.self_training"
BAD_NEW = [
    (f"{MIC}.mask_block_size", 0, "an integer > 0"),
    (f"{MIC}.mask_block_size", 24, "a divisor of both sides of train_seg.crop=[64, 128]"),
    (f"{MIC}.mask_block_size", 8.0, "an integer"),
    (f"{MIC}.mask_ratio", 1.0, "a number in (0, 1)"),
    (f"{MIC}.mask_ratio", 0, "a number in (0, 1)"),
    (f"{MIC}.weight", 0.0, "a number > 0"),
    (f"{MIC}.lambda", 1.0, "allowed keys under"),
    ("train_seg.warmup", 1.0, "a number in [0, 1)"),
    ("train_seg.warmup", -0.1, "a number in [0, 1)"),
    ("train_seg.head_lr_mult", 0, "a number > 0"),
    (f"{WARM}.init_from", "nope", "another variant of train_seg.variants: one of source_only"),
    (f"{WARM}.init_from", "cyclegan_mic", "another variant"),
    (f"{WARM}.init_from", None, "a non-empty string"),
    (f"{WARM}.warmup", 1.0, "a number in [0, 1)"),
    (f"{WARM}.head_lr_mult", -1.0, "a number > 0"),
    (f"{ST}.rare_class_min_crop_ratio", -0.5, "a number in [0, 1] (0: no crop redraw)"),
    (f"{ST}.rare_class_min_crop_ratio", 1.5, "a number in [0, 1] (0: no crop redraw)"),
    (f"{ST}.crop_max_class_share", 0.0, "a number in (0, 1] (1: off)"),
    (f"{ST}.crop_max_class_share", "0.75", "a number"),
    (f"{ST}.pseudo_label_ignore_top", 1.0, "a share of the crop height in [0, 1)"),
    (f"{ST}.pseudo_label_ignore_bottom", -0.1, "a share of the crop height in [0, 1)"),
]


def test_bad_no_weight_decay_words_are_named(raw):
    with pytest.raises(ConfigError, match=r"train_seg.no_weight_decay = 'norm' .* a list of"):
        parse_params(_set(raw, "train_seg.no_weight_decay", "norm"))
    with pytest.raises(ConfigError, match=r"no_weight_decay\[1\] = 'encoder.x' .* without dots"):
        parse_params(_set(raw, "train_seg.no_weight_decay", ["norm", "encoder.x"]))


def test_a_pseudo_label_crop_that_leaves_no_rows_is_named(raw):
    data = _set(_with_mic_and_warm_start(raw), f"{ST}.pseudo_label_ignore_top", 0.5)
    with pytest.raises(ConfigError, match=r"pseudo_label_ignore_bottom = 0\.5 .* leaves rows"):
        parse_params(_set(data, f"{ST}.pseudo_label_ignore_bottom", 0.5))


@pytest.mark.parametrize(
    ("key", "value", "allowed"), BAD_NEW, ids=[f"{k.split('.')[-1]}={v!r}" for k, v, _ in BAD_NEW]
)
def test_bad_mic_and_warm_start_settings_name_key_value_and_allowed(raw, key, value, allowed):
    with pytest.raises(ConfigError) as err:
        parse_params(_set(_with_mic_and_warm_start(raw), key, value))
    message = str(err.value)
    assert key in message and allowed in message
    if "allowed keys" not in allowed:
        assert repr(value) in message


THINGS = [
    "traffic light",
    "traffic sign",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]


def _with_feature_distance(raw: dict, weights: str | None = "weights/mit_b0.pth") -> dict:
    data = _set(raw, "train_seg.encoder_weights", weights)
    distance = {"weight": 0.005, "classes": THINGS, "min_class_share": 0.75}
    return _set(data, "train_seg.variants.cyclegan_st.self_training.feature_distance", distance)


FD = "train_seg.variants.cyclegan_st.self_training.feature_distance"


def test_the_feature_distance_block_parses_as_daformer_sets_it(raw):
    spec = parse_params(_with_feature_distance(raw)).train_seg.variants["cyclegan_st"]
    distance = spec.self_training.feature_distance
    assert (distance.weight, distance.min_class_share) == (0.005, 0.75)
    assert distance.classes == tuple(THINGS)
    plain = parse_params(raw).train_seg.variants["cyclegan_st"].self_training
    assert plain.feature_distance is None


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        (f"{FD}.weight", 0.0, "a number > 0"),
        (f"{FD}.classes", [], "at least one class"),
        (f"{FD}.classes", ["car", "lorry"], "one of the 19 classes: road, sidewalk"),
        (f"{FD}.min_class_share", 0.0, "a number in (0, 1]"),
        (f"{FD}.min_class_share", 1.5, "a number in (0, 1]"),
    ],
)
def test_bad_feature_distance_settings_are_named(raw, key, value, allowed):
    with pytest.raises(ConfigError) as err:
        parse_params(_set(_with_feature_distance(raw), key, value))
    message = str(err.value)
    named = f"{key}[1]" if value == ["car", "lorry"] else key
    assert named in message and allowed in message


def test_settings_name_classes_as_the_data_layer_does():
    assert TRAIN_CLASS_NAMES == CLASS_NAMES


def test_the_feature_distance_needs_the_encoder_weights_it_anchors_to(raw):
    with pytest.raises(ConfigError) as err:
        parse_params(_with_feature_distance(raw, weights=None))
    assert FD in str(err.value) and "train_seg.encoder_weights is null" in str(err.value)


def test_a_warm_start_cycle_is_refused(raw):
    data = _with_mic_and_warm_start(raw)
    warm = {"init_from": "cyclegan_mic", "warmup": 0.0, "head_lr_mult": 1.0}
    data["train_seg"]["variants"]["cyclegan"]["warm_start"] = warm
    with pytest.raises(ConfigError, match=r"warm_start\.init_from.*cycle cyclegan -> "):
        parse_params(data)


def test_random_init_on_other_data_is_warned_about_with_its_cost(raw) -> None:
    demo = Path("data/demo")
    assert random_init_warning(parse_params(raw), demo) is None  # the demo's roots
    other = _set(_set(raw, "data.source.root", "/data/gta5"), "data.target.root", "/data/cs")
    warning = random_init_warning(parse_params(other), demo)
    assert "train_seg.encoder_weights is null" in warning and "37.3" in warning
    with_weights = _set(other, "train_seg.encoder_weights", "weights/mit_b5.pth")
    assert random_init_warning(parse_params(with_weights), demo) is None


def test_the_settings_check_names_a_missing_root_or_weights_file(raw, tmp_path) -> None:
    params = parse_params(_set(raw, "data.source.root", str(tmp_path / "gta5")))
    with pytest.raises(ConfigError, match=r"data\.source\.root = .*gta5.*an existing folder"):
        check_paths(params, Path("data/demo"))
    params = parse_params(_set(raw, "train_seg.encoder_weights", str(tmp_path / "w.pth")))
    with pytest.raises(ConfigError, match=r"train_seg\.encoder_weights = .*w\.pth.*existing"):
        check_paths(params, Path("data/demo"))


def test_a_sliding_window_names_its_bad_side(raw) -> None:
    data = copy.deepcopy(raw)
    data["evaluate"]["sliding_window"] = {"window": [64, 128], "stride": [32, 64]}
    assert parse_params(data).evaluate.sliding_window.stride == (32, 64)
    data["evaluate"]["sliding_window"] = {"window": [64, 100], "stride": [32, 64]}
    with pytest.raises(ConfigError, match=r"evaluate\.sliding_window\.window = \[64, 100\]"):
        parse_params(data)
    data["evaluate"]["sliding_window"] = {"window": [64, 128], "stride": [32, 256]}
    with pytest.raises(ConfigError, match=r"evaluate\.sliding_window\.stride = \[32, 256\]"):
        parse_params(data)


def test_fdas_entropy_term_belongs_to_an_fda_variant(raw) -> None:
    data = copy.deepcopy(raw)
    entropy = {"weight": 0.005, "ita": 2.0}
    data["train_seg"]["variants"]["fda"]["fda_entropy"] = entropy
    assert parse_params(data).train_seg.variants["fda"].fda_entropy.ita == 2.0
    data["train_seg"]["variants"]["source_only"]["fda_entropy"] = entropy
    with pytest.raises(ConfigError, match=r"variants\.source_only\.fda_entropy = .*an FDA variant"):
        parse_params(data)
    del data["train_seg"]["variants"]["source_only"]["fda_entropy"]
    data["train_seg"]["variants"]["fda"]["fda_entropy"] = {"weight": 0.005, "ita": 0}
    with pytest.raises(ConfigError, match=r"variants\.fda\.fda_entropy\.ita = 0"):
        parse_params(data)
