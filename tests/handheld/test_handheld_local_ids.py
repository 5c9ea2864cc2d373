"""The ids of a courier's own site proposals and jobs are unique across outlets and
reinstalls: the platform's site registry spans every outlet and keeps the first
proposal under an id, so another outlet's ``hh01`` (or this one after its storage was
wiped, counting from 1 again) proposing ``sv-hh01-1`` would be dropped unseen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from handheld.jobs import Jobs, PhotoSink
from handheld.photo_index import PhotoIndex


class Sink(PhotoSink):
    def add(self, path: Path, meta: dict[str, Any]) -> None:
        pass


def jobs(tmp: Path, scope: str) -> Jobs:
    tmp.mkdir(parents=True)
    return Jobs(tmp, "hh01", lambda t, c, b: ("e", 1), lambda seq: True, PhotoIndex(tmp / "index.db"),
                lambda: None, Sink(), scope=scope)


def test_proposals_of_two_outlets_and_a_reinstall_do_not_share_ids(tmp_path: Path) -> None:
    ids = [jobs(tmp_path / name, scope).propose("下口村")["survey"]
           for name, scope in (("a", "o1/1111"), ("b", "o2/2222"), ("c", "o1/3333"))]
    assert len(set(ids)) == 3, ids
    assert all(i.startswith("sv-hh01-") and len(i) <= 64 for i in ids)  # the platform keeps 64 characters
    again = jobs(tmp_path / "d", "o1/1111").propose("下口村")["survey"]
    assert again == ids[0]  # the tag is the install's, not random: the same install, the same series
