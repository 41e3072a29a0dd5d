"""Files that are not state dicts: each is refused with a message that says what it is, and no
pickled code ever runs."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import pytest
import torch

from resnext_deploy.errors import CheckpointError
from resnext_deploy.models.checkpoint import read_checkpoint


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize(
    "make",
    [
        lambda m: {"fc.weight": [[0.0, 1.0]]},
        lambda m: collections.OrderedDict(conv1=[1, 2, 3]),
        lambda m: [1, 2, 3],
        lambda m: Payload(m),
        lambda m: {"state_dict": Payload(m)},
    ],
    ids=["dict", "ordereddict", "list", "payload", "nested-payload"],
)
def test_a_raw_pickle_is_named_as_such_and_never_run(tmp_path: Path, make, protocol: int) -> None:  # noqa: ANN001
    marker = tmp_path / "code-ran"
    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps(make(marker), protocol=protocol))
    with pytest.raises(CheckpointError, match="is a pickled Python object, not a state dict"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "is empty"),
        (b"hello, I am a text file\n", "not a PyTorch checkpoint"),
        (b"\x00\x01garbage", "not a PyTorch checkpoint"),
        (b"PK\x03\x04 truncated zip", "not a PyTorch checkpoint"),
    ],
)
def test_other_files_are_not_checkpoints(tmp_path: Path, data: bytes, fragment: str) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=fragment) as caught:
        read_checkpoint(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("zip_format", [True, False])
def test_both_torch_save_formats_still_load(tmp_path: Path, zip_format: bool) -> None:
    path = tmp_path / "weights.pth"
    weight = torch.arange(6.0).reshape(3, 2)
    torch.save({"fc.weight": weight}, path, _use_new_zipfile_serialization=zip_format)
    torch.testing.assert_close(read_checkpoint(path).state_dict["fc.weight"], weight)
