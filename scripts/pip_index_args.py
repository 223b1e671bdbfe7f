"""Print the indexes and find-links pip is configured with as uv's flags, one argument per line.

uv does not read pip's configuration (pip.conf, PIP_* variables); scripts/install.sh hands it
pip's, so both installers look in the same places. The lock's hashes decide which files either
accepts. pip's constraint files are left out: uv's hash mode takes them for unpinned requirements,
and the lock pins every package to one version already.
"""

from __future__ import annotations

import subprocess
import sys

UV_FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
}
# pip's precedence, lowest first: a [global] setting, an [install] one, a PIP_* variable.
SECTION_RANK = {"global": 0, "install": 1, ":env:": 2}


def uv_args(pip_config_list: str) -> list[str]:
    """uv's flags for `pip config list`'s output (lines `section.key='value'`)."""
    chosen: dict[str, tuple[int, str]] = {}
    for line in pip_config_list.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if name not in UV_FLAGS or section not in SECTION_RANK:
            continue
        rank = SECTION_RANK[section]
        if rank >= chosen.get(name, (-1, ""))[0]:
            chosen[name] = (rank, value.strip().strip("'\""))
    args = []
    for name, (_, value) in chosen.items():
        for item in value.split():  # pip's lists are whitespace-separated
            args += [UV_FLAGS[name], item]
    return args


def main() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print("\n".join(uv_args(listing)))


if __name__ == "__main__":
    main()
