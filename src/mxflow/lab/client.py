"""A tiny SMTP client for the lab's synthetic senders: sends bytes exactly as given.

The lab needs to send what a real client library refuses to (a smuggling attempt with
bare line ends), to bind each sender's own 127.x source address, and to know whether a
session that broke had already sent the message (the server may have taken it: a sender
that tries the next MX then may deliver it twice, which SMTP allows).
"""

from __future__ import annotations

import asyncio
import contextlib


class LabClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = ""
        self.data_sent = False  # the message and its final dot were written

    @classmethod
    async def open(cls, host: str, port: int, *, source: str | None = None) -> LabClient:
        reader, writer = await asyncio.open_connection(
            host, port, local_addr=(source, 0) if source else None
        )
        client = cls(reader, writer)
        try:
            client.greeting = await client.reply()
        except BaseException:
            writer.close()
            raise
        return client

    async def reply(self) -> str:
        """One (possibly multi-line) reply, lines joined with " / "."""
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 15)
            if not line:
                return "000 connection closed"
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if text[3:4] != "-":
                return " / ".join(lines) if len(lines) > 1 else text

    async def cmd(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def transaction(self, mail_from: str, rcpts: list[str], data: bytes) -> str:
        """MAIL, RCPT..., DATA, then `data` as-is (it must carry its own terminator).

        Returns the first refusal, or the final reply to the data.
        """
        answer = await self.cmd(f"MAIL FROM:<{mail_from}>")
        if not answer.startswith("250"):
            return answer
        accepted = 0
        last = ""
        for rcpt in rcpts:
            last = await self.cmd(f"RCPT TO:<{rcpt}>")
            accepted += last.startswith("250")
        if not accepted:
            await self.cmd("RSET")
            return last
        answer = await self.cmd("DATA")
        if not answer.startswith("354"):
            return answer
        self.writer.write(data)
        self.data_sent = True
        return await self.reply()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.cmd("QUIT")
        self.writer.close()


def dot_stuff(raw: bytes) -> bytes:
    """`raw` (CRLF line ends) made ready to follow DATA: stuffed and terminated."""
    data = (b"\r\n" + raw).replace(b"\r\n.", b"\r\n..")[2:]
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
