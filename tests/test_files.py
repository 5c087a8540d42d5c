"""runtime/files.py: a file or a folder is replaced whole or not at all."""

from __future__ import annotations

import pytest

from simplepo_helpers.runtime.files import publish_folder, write_text_atomic


def test_write_text_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_text_atomic(path, "old\n")
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def _filled(folder, text):
    folder.mkdir()
    (folder / "weights").write_text(text)
    return folder


def test_publish_folder_puts_the_staging_folder_in_place(tmp_path):
    target = tmp_path / "checkpoint-5"
    assert publish_folder(_filled(tmp_path / ".staging", "new"), target)
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]


def test_publish_folder_replaces_an_existing_folder_only_once_the_new_one_is_whole(tmp_path):
    target = _filled(tmp_path / "checkpoint-5", "old")
    assert publish_folder(_filled(tmp_path / ".staging", "new"), target)
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]  # the old one removed


def test_publish_folder_can_keep_what_another_process_published_first(tmp_path):
    target = _filled(tmp_path / "run", "theirs")
    staging = _filled(tmp_path / ".staging", "mine")
    assert not publish_folder(staging, target, replace=False)
    assert (target / "weights").read_text() == "theirs"


def test_publish_folder_raises_when_the_staging_folder_is_missing(tmp_path):
    with pytest.raises(OSError):
        publish_folder(tmp_path / "missing", tmp_path / "target")
