"""TensorBoard event files: the end phase's writer (``event_writer``), and checksums computed in C.
Without TensorFlow, TensorBoard checksums every record it writes or reads with a pure-Python CRC-32C:
13 ms per 100 KB figure here, more than drawing the figure. google-crc32c computes the same checksum in C
(microseconds); ``fast_checksums`` points TensorBoard's record writer and reader at it."""

from __future__ import annotations

import contextlib


def masked_crc32c(data: bytes) -> int:
    """TensorBoard's masked CRC-32C of ``data`` (the checksum its record format stores)."""
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def fast_checksums() -> None:
    if _installed:
        return
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    from tensorboard.summary.writer import record_writer

    record_writer.masked_crc32c = masked_crc32c
    pywrap_tensorflow.masked_crc32c = masked_crc32c  # the reader's (EventAccumulator)
    globals()["_installed"] = True


_installed = False


@contextlib.contextmanager
def event_writer(logger):
    """The event writer of a TensorBoardLogger. Lightning closes the logger's writer when fit ends; the end
    phase's events (figures, the HParams tab) then go into an event file of their own in the same run
    directory, which TensorBoard reads with the others."""
    writer = logger.experiment.file_writer
    if writer is not None:
        yield writer
        return
    from torch.utils.tensorboard.writer import FileWriter

    writer = FileWriter(logger.log_dir)
    try:
        yield writer
    finally:
        writer.close()
