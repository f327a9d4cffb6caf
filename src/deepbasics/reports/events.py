"""TensorBoard event files checksummed in C. Without TensorFlow, TensorBoard checksums every record it
writes or reads with a pure-Python CRC-32C: 13 ms per 100 KB figure here, more than drawing the figure.
google-crc32c computes the same checksum in C (microseconds); ``fast_checksums`` points TensorBoard's
record writer and reader at it."""

from __future__ import annotations


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
