"""Read the scalars of TensorBoard event files: one pass per file, records checked, damage reported.

An event file is a sequence of TFRecords: a length, its CRC-32C, a payload (one ``Event``
protobuf) and the payload's CRC-32C. :func:`read_event_file` reads the file once, finds every
whole record, parses each, and keeps every value of the tags asked for (of the others, the last
value). Checksums of all records are computed together in one vectorized pass. A file that ends
inside a record, or holds a record that fails its checksum or does not parse, is read up to that
record, as TensorBoard's reader does, and says which (``EventFile.problem``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENT_GLOB = "events.out.tfevents.*"

#: bytes before a TFRecord's payload (its length, 8, and the length's CRC, 4) and after it (the payload's CRC)
_HEADER, _FOOTER = 12, 4
#: payloads up to this size (every scalar record) are checked against their CRC; longer ones (images) are not read
_CHECKED_PAYLOAD = 1024
#: CRC-32C (Castagnoli) of every byte value, the checksum of TFRecord framing
_CRC_TABLE: Any = None


def _crc_table() -> Any:
    global _CRC_TABLE
    if _CRC_TABLE is None:
        import numpy as np

        table = []
        for byte in range(256):
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            table.append(crc)
        _CRC_TABLE = np.array(table, dtype=np.uint32)
    return _CRC_TABLE


def masked_crc32c(chunks: Sequence[bytes]) -> list[int]:
    """The masked CRC-32C that TFRecord stores after a record's length and after its payload, for many strings.

    The strings advance together, one byte position per vectorized step, so the cost grows
    with the longest string, not with a Python loop over every byte.

    Example::

        >>> masked_crc32c([b"", b"abc"])
        [2726488792, 569464686]
    """
    return _masked_crc32c(chunks).tolist()


def _masked_crc32c(chunks: Sequence[bytes]) -> Any:
    """:func:`masked_crc32c` as a ``uint32`` array."""
    import numpy as np

    n, table = len(chunks), _crc_table()
    if not n:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")  # longest first: byte j updates a prefix of the rows
    lengths = lengths[order]
    width = int(lengths[0])
    grid = np.zeros((n, width), dtype=np.uint8)
    flat = np.frombuffer(b"".join(chunks[i] for i in order), dtype=np.uint8)
    firsts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    grid[np.repeat(np.arange(n), lengths), np.arange(flat.size) - firsts] = flat
    rows = np.searchsorted(-lengths, -np.arange(width), side="left")  # strings longer than j
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    for j in range(width):
        head = crc[: rows[j]]
        crc[: rows[j]] = table[(head ^ grid[: rows[j], j]) & 0xFF] ^ (head >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    masked = ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)  # wraps modulo 2**32
    out = np.empty(n, dtype=np.uint32)
    out[order] = masked
    return out


def _parse_event(payload: bytes) -> Any:
    """One ``Event`` protobuf (a module-level name, so a test can count the records read)."""
    return _event_class().FromString(payload)


@functools.cache
def _event_class() -> Any:
    from tensorboard.compat.proto.event_pb2 import Event

    return Event


@dataclass
class EventFile:
    """The scalars of one event file, read in one pass.

    Attributes:
        path: the file.
        series: ``(step, value)`` of every kept tag, in the order written.
        last: the last value of every scalar tag.
        records: whole, intact records read.
        problem: where reading stopped early (``"truncated"``: the file ends inside a record;
            ``"corrupt"``: a record failed its checksum or did not parse), else None.
        size: the file's size in bytes.
    """

    path: Path
    series: dict[str, list[tuple[int, float]]]
    last: dict[str, float]
    records: int
    problem: str | None
    size: int


def _frames(data: bytes) -> tuple[list[int], list[int], bool]:
    """Offsets and payload lengths of the whole records in ``data``, and whether it ends inside a record."""
    offsets, lengths, offset, size = [], [], 0, len(data)
    while offset + _HEADER <= size:
        (length,) = struct.unpack_from("<Q", data, offset)
        if offset + _HEADER + length + _FOOTER > size:
            break
        offsets.append(offset)
        lengths.append(length)
        offset += _HEADER + length + _FOOTER
    return offsets, lengths, offset < size


def _scalars(data: bytes, offsets: Sequence[int], lengths: Sequence[int], keep: Callable[[str], bool]) -> tuple[
        dict[str, list[tuple[int, float]]], dict[str, float], int]:
    """Parse the records at ``offsets``: ``(series, last, parsed)``.

    ``parsed`` counts the records before the first that does not parse (all of them when each does).
    """
    from google.protobuf.message import DecodeError

    series: dict[str, list[tuple[int, float]]] = {}
    last: dict[str, float] = {}
    wanted: dict[str, bool] = {}
    parse = _parse_event
    for i, offset in enumerate(offsets):
        start = offset + _HEADER
        try:
            event = parse(data[start: start + lengths[i]])
        except DecodeError:
            return series, last, i
        step = event.step
        for value in event.summary.value:
            if not value.HasField("simple_value"):
                continue
            tag, number = value.tag, value.simple_value
            last[tag] = number
            shown = wanted.get(tag)
            if shown is None:
                shown = wanted[tag] = keep(tag)
            if shown:
                series.setdefault(tag, []).append((step, number))
    return series, last, len(offsets)


def _first_failed_check(data: bytes, offsets: Sequence[int], lengths: Sequence[int]) -> int:
    """Index of the first record whose length, or whose payload up to ``_CHECKED_PAYLOAD`` bytes, fails its CRC.

    ``len(offsets)`` when none does. All checksums are computed in one vectorized pass.
    """
    import numpy as np

    small = [i for i, length in enumerate(lengths) if length <= _CHECKED_PAYLOAD]
    firsts = [*offsets, *(offsets[i] + _HEADER for i in small)]
    ends = [*(o + 8 for o in offsets), *(offsets[i] + _HEADER + lengths[i] for i in small)]
    stored = np.frombuffer(b"".join([data[end: end + 4] for end in ends]), dtype="<u4")
    owners = np.array([*range(len(offsets)), *small], dtype=np.int64)
    failed = owners[_masked_crc32c([data[a:b] for a, b in zip(firsts, ends)]) != stored]
    return int(failed.min(initial=len(offsets)))


def read_event_file(path: str | Path, keep: Callable[[str], bool]) -> EventFile:
    """The scalars of a TensorBoard event file, as TensorBoard's reader sees them, in one pass over its bytes.

    Every record's length is checked against its CRC, and so is every payload of up to
    ``_CHECKED_PAYLOAD`` bytes (each scalar record; images are neither checked nor read).
    Reading stops at the first record that is cut short or fails a check, as TensorBoard's
    reader does, and ``problem`` says which.

    Args:
        path: the event file.
        keep: whether every value of a tag is kept in ``series`` (of the others, the last value is).
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    offsets, lengths, cut_short = _frames(data)
    series, last, parsed = _scalars(data, offsets, lengths, keep)
    good = min(_first_failed_check(data, offsets[:parsed], lengths[:parsed]), parsed)
    if good < parsed:  # a record failed its checksum: keep only what came before it
        series, last, _ = _scalars(data, offsets[:good], lengths[:good], keep)
    problem = "corrupt" if good < len(offsets) else "truncated" if cut_short else None
    return EventFile(path, series, last, good, problem, len(data))


def read_events(log_dir: Path, keep: Callable[[str], bool]) -> list[EventFile]:
    """Every event file of ``log_dir``, oldest first (the order TensorBoard reads them in).

    Raises:
        ValueError: when no event file of ``log_dir`` holds a readable record, though one holds bytes.
    """
    files = [read_event_file(f, keep) for f in sorted(log_dir.glob(EVENT_GLOB))]
    if files and not any(f.records for f in files):
        garbage = next((f for f in files if f.size), None)
        if garbage is not None:
            raise ValueError(
                f"'{garbage.path}': not a TensorBoard event file (no readable record in its {garbage.size} "
                "bytes); remove it, or pass the folder of a run trained with the tensorboard logger"
            )
    return files


def damage_note(f: EventFile, stops: str) -> str:
    """One line saying what an event file lost."""
    if f.problem == "truncated":
        what = f"ends in a truncated record (the writer stopped mid-record, after {f.records} whole records)"
    else:
        what = f"holds a corrupt record after {f.records} whole records (a failed checksum); reading stopped there"
    return f"note: {f.path} {what}; {stops}, and anything logged later is lost"
