"""A run folder from elsewhere is data, never code: a crafted trainer file cannot run code on
resume, links cannot make scpl write, lock or delete outside the folder, and a file without its
checksum is named when it is loaded."""

import os

import pytest
import torch

from scpl.checkpoint import checksum_path, load, sha256
from test_cli_faults import FAST, one_error_line, trained


class Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_trainer_file_with_a_matching_checksum_runs_no_code_on_resume(capsys, tmp_path):
    out = trained(tmp_path)
    trainer = out / "epochs" / "1" / "trainer-0.pt"
    marker = tmp_path / "pwned"
    state = torch.load(trainer, weights_only=True)  # the real state is plain data
    torch.save({**state, "extra": Payload(str(marker))}, trainer)
    checksum_path(trainer).write_text(sha256(trainer) + "\n")  # the attacker writes the checksum too
    line = one_error_line(capsys, *FAST, "--out", str(out), "--resume")
    assert "trainer-0.pt holds Python objects that a safe load refuses" in line
    assert not marker.exists()


def test_a_trainer_file_holds_tensors_numbers_and_strings_only(tmp_path):
    out = trained(tmp_path)
    state = torch.load(out / "epochs" / "1" / "trainer-0.pt", weights_only=True)
    assert set(state) == {"progress", "rng", "config"}
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


def test_a_linked_lock_file_is_refused_and_its_target_untouched(capsys, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(target, out / ".lock")
    line = one_error_line(capsys, *FAST, "--out", str(out))
    assert ".lock is a symbolic link; scpl does not write, lock or delete through links" in line
    assert target.read_text() == "keep me"


def test_a_linked_epochs_folder_is_refused_and_nothing_in_its_target_is_deleted(capsys, tmp_path):
    out = trained(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    for name in ("1", "7", "data"):
        (elsewhere / name).mkdir(parents=True)
    for folder in (out / "epochs").iterdir():
        folder.rename(elsewhere / f"set-{folder.name}")
    (out / "epochs").rmdir()
    os.symlink(elsewhere, out / "epochs")
    line = one_error_line(capsys, *FAST, "--out", str(out), "--resume")
    assert "epochs is a symbolic link" in line
    assert sorted(p.name for p in elsewhere.iterdir()) == ["1", "7", "data", "set-1"]


def test_a_file_without_its_checksum_is_loaded_with_a_warning_naming_it(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.warns(RuntimeWarning, match=r"model.pt has no model.pt.sha256 beside it: it is loaded "
                                            r"unchecked"):
        assert torch.equal(load(path)["w"], torch.ones(2))
