"""scripts/install.sh hands uv the indexes and find-links pip is configured with."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO_ROOT


def _pip_index_args():
    spec = importlib.util.spec_from_file_location(
        "pip_index_args", REPO_ROOT / "scripts" / "pip_index_args.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pip_settings_become_uv_flags_with_pips_precedence() -> None:
    listing = "\n".join(
        [
            "global.cert='/etc/ssl/certs/ca.crt'",
            "global.find-links='/srv/wheels'",
            "global.extra-index-url='file:///srv/a/simple file:///srv/b/simple'",
            "global.constraint='/etc/pip/constraints.txt'",
            "install.index-url='https://index.example/simple'",
            "global.index-url='https://ignored.example/simple'",
            ":env:.find-links='/env/wheels'",
        ]
    )
    assert _pip_index_args().uv_args(listing) == [
        "--find-links",
        "/env/wheels",  # a PIP_* variable beats pip.conf
        "--extra-index-url",
        "file:///srv/a/simple",
        "--extra-index-url",
        "file:///srv/b/simple",
        "--index-url",
        "https://index.example/simple",  # [install] beats [global]
    ]


def test_no_pip_settings_give_no_flags() -> None:
    assert _pip_index_args().uv_args("") == []
