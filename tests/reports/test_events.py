"""TensorBoard's record checksums computed in C equal TensorBoard's own, and its files still read back."""

import os

import pytest
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c, u32

from deepbasics.reports.events import fast_checksums, masked_crc32c


def tensorboards_masked_crc32c(data: bytes) -> int:
    crc = u32(crc32c(data))
    return u32(((crc >> 15) | u32(crc << 17)) + 0xA282EAD8)


def test_the_checksum_is_tensorboards():
    for size in (0, 1, 7, 12, 1000, 65_537):
        data = os.urandom(size)
        assert masked_crc32c(data) == tensorboards_masked_crc32c(data), size


def test_events_written_with_it_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    fast_checksums()
    with SummaryWriter(str(tmp_path)) as writer:
        for step in range(5):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [p.step for p in events.Scalars("loss")] == list(range(5))
    assert [p.value for p in events.Scalars("loss")] == pytest.approx([1.0 / (s + 1) for s in range(5)], rel=1e-6)
