"""Unit: `make platform-down` unmounts what dockerd left under .platform/ (an nsfs mount of its
network namespace outlived dockerd, and `rm -rf` of a checkout then failed with "Device or
resource busy"); nothing outside .platform/ is touched."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "cluster" / "platform"))

from containers import mounts_under  # noqa: E402  (cluster/platform is a folder of scripts)


def test_only_mounts_under_the_stacks_folder_deepest_first(tmp_path):
    base = tmp_path / "repo" / ".platform"
    text = "\n".join([
        "proc /proc proc rw 0 0",
        f"nsfs {base}/docker/exec/netns/default nsfs rw 0 0",
        f"overlay {base}/docker/root/overlay2/abc/merged overlay rw 0 0",
        f"tmpfs {base} tmpfs rw 0 0",  # the folder itself: not under it
        f"nsfs {tmp_path}/repo/.platform-other/netns nsfs rw 0 0",  # a sibling, not ours
        f"tmpfs {str(base).replace(' ', '')}/my\\040dir tmpfs rw 0 0",
        "",
    ])
    assert mounts_under(base, text) == [
        f"{base}/docker/root/overlay2/abc/merged",
        f"{base}/docker/exec/netns/default",
        f"{base}/my dir",
    ]
