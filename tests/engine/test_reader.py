"""The server's input, without a socket (smtp/reader.py): command lines cut within their
limit, the end of DATA found whatever way the bytes are split, too-big data discarded as
it arrives, and data past the spill threshold parked on disk and read back in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxflow.smtp.reader import MAX_COMMAND, DataTransfer, LineTooLong, Scan, Spill, take_line


def test_lines_are_cut_one_at_a_time_and_a_partial_one_waits() -> None:
    buf = bytearray(b"EHLO a\r\nNOOP\r\nMAIL FR")
    assert take_line(buf) == b"EHLO a\r\n"
    assert take_line(buf) == b"NOOP\r\n"
    assert take_line(buf) is None
    buf += b"OM:<a@b.test>\r\n"
    assert take_line(buf) == b"MAIL FROM:<a@b.test>\r\n"
    assert buf == b""


def test_a_line_is_limited_to_max_command_octets_with_its_line_end() -> None:
    longest = b"NOOP " + b"a" * (MAX_COMMAND - 7) + b"\r\n"
    assert len(longest) == MAX_COMMAND
    assert take_line(bytearray(longest)) == longest
    with pytest.raises(LineTooLong):
        take_line(bytearray(b"x" + longest))
    partial = bytearray(b"A" * MAX_COMMAND)  # no line end yet: may still be one
    assert take_line(partial) is None
    partial += b"A"
    with pytest.raises(LineTooLong):
        take_line(partial)


def _feed(transfer: DataTransfer, buf: bytearray, pieces: list[bytes]) -> Scan:
    found = Scan.MORE
    for piece in pieces:
        assert found is Scan.MORE
        buf += piece
        found = transfer.scan(buf)
    return found


@pytest.mark.parametrize("split", [1, 2, 3, 4, 5, 7])
def test_the_end_is_found_however_the_bytes_are_split(split: int) -> None:
    data = b"Subject: x\r\n\r\nbody\r\n..stuffed\r\n.\r\nQUIT\r\n"
    buf = bytearray()
    transfer = DataTransfer(buf, 1000, None)
    pieces = [data[i : i + split] for i in range(0, len(data), split)]
    found = Scan.MORE
    for piece in pieces:
        buf += piece
        if found is Scan.MORE:
            found = transfer.scan(buf)
    assert found is Scan.END
    assert transfer.take(buf) == b"Subject: x\r\n\r\nbody\r\n..stuffed\r\n"
    assert buf == b"QUIT\r\n"  # pipelined after the data: left for the command loop


def test_an_empty_message_and_a_first_line_of_a_dot_end_the_data() -> None:
    buf = bytearray()
    transfer = DataTransfer(buf, 1000, None)
    assert _feed(transfer, buf, [b".\r\n"]) is Scan.END
    assert transfer.take(buf) == b""


def test_too_big_data_is_dropped_as_it_arrives() -> None:
    buf = bytearray()
    transfer = DataTransfer(buf, 100, None)
    assert _feed(transfer, buf, [b"a" * 80 + b"\r\n", b"b" * 80 + b"\r\n"]) is Scan.MORE
    assert transfer.too_big and len(buf) == 4  # a split end marker may start here
    assert _feed(transfer, buf, [b".\r\nNOOP\r\n"]) is Scan.END
    assert transfer.take(buf) == b""
    assert buf == b"NOOP\r\n"


async def test_data_past_the_threshold_is_parked_and_read_back_in_order(tmp_path: Path) -> None:
    spill = Spill(tmp_path / "incoming", threshold=64)
    buf = bytearray()
    transfer = DataTransfer(buf, 10_000, spill)
    lines = [b"line %03d\r\n" % i for i in range(60)]
    for line in lines:
        buf += line
        found = transfer.scan(buf)
        if found is Scan.PARK:
            chunk = transfer.cut(buf)
            buf += b"more"  # arrives while the chunk is written: scanned next
            await transfer.parked.write(chunk)
            del buf[-4:]
            found = transfer.scan(buf)
        assert found is Scan.MORE
    assert spill.parked_bytes > 0 and len(buf) < 64 + 16
    buf += b".\r\nQUIT\r\n"
    assert transfer.scan(buf) is Scan.END
    assert await transfer.take_parked(buf) == b"".join(lines)
    assert buf == b"QUIT\r\n"
    assert transfer.parked.file is None  # closed: the unlinked file's space is freed
