"""Quarantine through a running gateway, then release: the message goes into the node's
own spool (not through its filter again), reaches the original recipients, and the
gateway's trace shows the whole story."""

from __future__ import annotations

from pathlib import Path

from mxflow.config import load_config
from mxflow.roles.build import build_node
from mxflow.store.trace import TraceStore
from tests.clirun import mxflow
from tests.conftest import unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    relay_gateway_toml,
    sink_config,
    stuffed,
    wait_for,
)

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"


def gateway_toml(tmp_path: Path, sink_address: str, sink_port: int) -> Path:
    address = unique_loopback()
    path = tmp_path / "gateway.toml"
    path.write_text(
        relay_gateway_toml(
            "gateway",
            tmp_path / "gw",
            f"{sink_address}:{sink_port}",
            address=address,
            extra="""
[filter]
reject_action = "quarantine"   # GTUBE scores past reject_score: hold it instead
""",
        )
    )
    return path


async def test_release_delivers_unfiltered_and_is_traced(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        config_file = gateway_toml(tmp_path, sink.address, sink.port)
        cfg = load_config(config_file)
        async with build_node(cfg) as gw:
            assert gw.quarantine is not None
            client = await RawSmtp.open(gw.address, gw.port)
            await client.cmd("EHLO c.fabrikam.test")
            spam = message("cheap pills", message_id="<held.1@fabrikam.test>", body=GTUBE)
            code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(spam))
            await client.close()
            assert code == 250 and "quarantined as" in text, text
            qid = text.split()[-1]
            code, out, err = await mxflow(
                "quarantine", "--config", str(config_file), "release", qid, "--no-learn"
            )
            assert code == 0, err
            assert "into the node's spool" in out, out
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            got = maildir_messages(sink_cfg, "bob@contoso.com")[0]
            # not filtered again: no verdict headers, no release stamp; the body is intact
            assert b"X-Spam-" not in got and b"X-Mxflow-Released" not in got
            assert got.endswith(spam)
            trace = TraceStore(cfg.trace_db, node="gateway")
            try:

                def delivered() -> bool:
                    return any(e.event == "delivered" for e in trace.all())

                await wait_for(delivered)
                events = [
                    (e.event, e.status) for e in trace.by_message_id("<held.1@fabrikam.test>")
                ]
            finally:
                trace.close()
            assert events[0] == ("quarantined", "Quarantined"), events
            assert ("quarantine-released", "Pending") in events
            assert ("received", "Pending") in events
            assert events[-1] == ("delivered", "Delivered"), events
            code, out, err = await mxflow(
                "quarantine", "--config", str(config_file), "release", qid
            )
            assert code != 0 and "not held" in (out + err)
