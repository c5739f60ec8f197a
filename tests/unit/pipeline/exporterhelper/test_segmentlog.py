"""The persistent queue's file format alone: round trips, replay position, torn and corrupt records, locking."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pipeline.exporterhelper.segmentlog import (
    HEADER_SIZE,
    LockedError,
    SegmentLog,
    segment_name,
)


def opened(path: Path, segment_bytes: int = 1 << 20, **kw: object) -> tuple[SegmentLog, list[tuple[bytes, int]]]:
    """A log opened on `path`, and the (body, items) of every record it found."""
    log = SegmentLog(path, segment_bytes, **kw)  # type: ignore[arg-type]
    log.lock(0o700)
    found = log.open()
    return log, [(log.read_span(r.segment, r.offset, r.size)[HEADER_SIZE:], r.items) for r in found.records]


def bodies(n: int, size: int = 100) -> list[tuple[bytes, int, int]]:
    return [(bytes([i % 251]) * size, i + 1, 1_700_000_000_000 + i) for i in range(n)]


def test_records_written_in_one_run_are_found_in_order_by_the_next(tmp_path: Path) -> None:
    log, found = opened(tmp_path)
    assert found == []
    recs = log.append(bodies(3)) + log.append(bodies(2))
    assert [r.items for r in recs] == [1, 2, 3, 1, 2] and recs[0].enqueued_ms == 1_700_000_000_000
    log.close()
    log, found = opened(tmp_path)
    assert found == [(b[0], b[1]) for b in bodies(3) + bodies(2)]
    log.close()


def test_the_cursor_skips_what_was_acknowledged_and_finished_segments_are_deleted(tmp_path: Path) -> None:
    log, _ = opened(tmp_path, segment_bytes=1000)
    first = log.append(bodies(9))      # > 1000 bytes: the next group starts a new segment
    second = log.append(bodies(2))
    assert second[0].segment == first[0].segment + 1
    log.save_cursor(second[1].segment, second[1].offset)  # everything before the last record acknowledged
    log.close()
    log, found = opened(tmp_path, segment_bytes=1000)
    assert found == [(bodies(2)[1][0], 2)]
    assert not (tmp_path / segment_name(first[0].segment)).exists()  # before the cursor: deleted on open
    log.close()


def test_a_damaged_cursor_replays_everything_rather_than_losing_anything(tmp_path: Path) -> None:
    log, _ = opened(tmp_path)
    recs = log.append(bodies(3))
    log.save_cursor(recs[2].segment, recs[2].offset)
    log.close()
    raw = bytearray((tmp_path / "cursor").read_bytes())
    raw[6] ^= 0xFF
    (tmp_path / "cursor").write_bytes(bytes(raw))
    log, found = opened(tmp_path)
    assert len(found) == 3
    log.close()


def test_a_torn_tail_is_skipped_counted_and_cut_off(tmp_path: Path) -> None:
    log, _ = opened(tmp_path)
    recs = log.append(bodies(3))
    log.close()
    seg = tmp_path / segment_name(recs[0].segment)
    with open(seg, "r+b") as f:   # a crash in the middle of writing the third record
        f.truncate(recs[2].offset + HEADER_SIZE + 10)
    log = SegmentLog(tmp_path, 1 << 20)
    log.lock(0o700)
    found = log.open()
    assert [r.items for r in found.records] == [1, 2]
    assert [(s.reason, s.offset, s.size) for s in found.skipped] == [("torn_tail", recs[2].offset, HEADER_SIZE + 10)]
    assert seg.stat().st_size == recs[2].offset  # cut off: the next start does not count it again
    log.close()
    log = SegmentLog(tmp_path, 1 << 20)
    log.lock(0o700)
    again = log.open()
    assert len(again.records) == 2 and again.skipped == []
    log.close()


def test_a_corrupt_record_in_the_middle_is_skipped_and_the_records_after_it_are_kept(tmp_path: Path) -> None:
    log, _ = opened(tmp_path)
    recs = log.append(bodies(4))
    log.close()
    seg = tmp_path / segment_name(recs[0].segment)
    data = bytearray(seg.read_bytes())
    data[recs[1].offset + HEADER_SIZE + 50] ^= 0x01          # a flipped bit in record 2's body
    data[recs[2].offset + 4:recs[2].offset + 8] = b"\xff\xff\xff\x7f"  # record 3's length is garbage
    seg.write_bytes(bytes(data))
    log, found = opened(tmp_path)
    assert [items for _, items in found] == [1, 4]
    log.close()


def test_zeros_left_by_a_power_loss_are_a_torn_tail(tmp_path: Path) -> None:
    log, _ = opened(tmp_path)
    log.append(bodies(2))
    log.close()
    seg = next(tmp_path.glob("*.seg"))
    with open(seg, "ab") as f:
        f.write(bytes(4096))
    log = SegmentLog(tmp_path, 1 << 20)
    log.lock(0o700)
    found = log.open()
    assert len(found.records) == 2 and [s.reason for s in found.skipped] == ["torn_tail"]
    log.close()


def test_a_failed_write_leaves_nothing_behind_and_the_next_one_works(tmp_path: Path) -> None:
    calls = {"n": 0}

    def sync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")

    log, _ = opened(tmp_path, sync_file=sync)
    with pytest.raises(OSError):
        log.append(bodies(2))
    assert log.active_size == 0 and log.disk_bytes == 0
    recs = log.append(bodies(1))
    assert recs[0].offset == 0 and calls["n"] == 2
    log.close()
    log, found = opened(tmp_path)
    assert [items for _, items in found] == [1]
    log.close()


def test_without_fsync_nothing_is_synced(tmp_path: Path) -> None:
    synced: list[int] = []
    log, _ = opened(tmp_path, fsync=False, sync_file=synced.append)
    log.append(bodies(2))
    assert synced == []
    log.close()


def test_a_second_opener_is_locked_out_until_the_first_closes(tmp_path: Path) -> None:
    first, _ = opened(tmp_path)
    second = SegmentLog(tmp_path, 1 << 20)
    with pytest.raises(LockedError):
        second.lock(0o700)
    first.close()
    second.lock(0o700)
    second.open()
    second.close()


def test_files_are_private_and_foreign_files_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "notes.txt").write_text("x")
    (tmp_path / "q" / "12.seg.bak").write_text("x")
    log, _ = opened(tmp_path / "q")
    log.append(bodies(1))
    log.save_cursor(*log.end())
    for name in (segment_name(log.active), "cursor", "LOCK"):
        assert os.stat(tmp_path / "q" / name).st_mode & 0o077 == 0, name
    log.close()
    assert (tmp_path / "q" / "notes.txt").exists() and (tmp_path / "q" / "12.seg.bak").exists()
