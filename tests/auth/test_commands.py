"""`mxflow dkim keygen|sign|verify` and `mxflow auth check`, run as the real command.

The command runs as a subprocess while the embedded DNS server keeps answering in this
test's event loop.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.auth.zones import serve_txt
from tests.clirun import mxflow

MESSAGE = (
    b"From: Alice <alice@contoso.com>\r\nTo: bob@fabrikam.example\r\nSubject: hi\r\n\r\nHello.\r\n"
)


def record_of(printed: str) -> str:
    """The TXT data from the zone-file line keygen prints (strings joined)."""
    return "".join(re.findall(r'"([^"]*)"', printed))


@pytest.mark.parametrize("extra", [[], ["--ed25519"]])
async def test_keygen_sign_verify(tmp_path: Path, extra: list[str]) -> None:
    code, out, err = await mxflow(
        "dkim", "keygen", "--domain", "contoso.com", "--selector", "s1", *extra, cwd=tmp_path
    )
    assert code == 0, err
    key_file = tmp_path / "s1.contoso.com.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "s1._domainkey.contoso.com. IN TXT" in out
    record = record_of(out)
    assert record.startswith("v=DKIM1; k=" + ("ed25519" if extra else "rsa"))

    message = tmp_path / "message.eml"
    message.write_bytes(MESSAGE)
    code, out, err = await mxflow(
        "dkim",
        "sign",
        str(message),
        "--domain",
        "contoso.com",
        "--selector",
        "s1",
        "--key",
        str(key_file),
    )
    assert code == 0, err
    signed = tmp_path / "signed.eml"
    signed.write_bytes(out.replace("\n", "\r\n").encode() + MESSAGE)
    async with serve_txt({"s1._domainkey.contoso.com": record}) as server:
        code, out, err = await mxflow(
            "dkim", "verify", str(signed), "--resolver", f"{server.host}:{server.port}"
        )
    assert code == 0, err
    assert out.startswith("dkim=pass")


async def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "s1.contoso.com.key").write_text("precious")
    code, _, err = await mxflow(
        "dkim", "keygen", "--domain", "contoso.com", "--selector", "s1", cwd=tmp_path
    )
    assert code == 2
    assert err.strip().count("\n") == 0 and "exists" in err
    assert (tmp_path / "s1.contoso.com.key").read_text() == "precious"


async def test_keygen_selector_names(tmp_path: Path) -> None:
    """RFC 6376 §3.1 selectors may have dots (`2026.eng`); a space is one clear error."""
    dotted, spaced = await asyncio.gather(
        mxflow("dkim", "keygen", "--domain", "contoso.com", "--selector", "2026.eng",
               "--ed25519", cwd=tmp_path),
        mxflow("dkim", "keygen", "--domain", "contoso.com", "--selector", "s 1", cwd=tmp_path),
    )  # fmt: skip
    assert dotted[0] == 0, dotted[2]
    assert "2026.eng._domainkey.contoso.com. IN TXT" in dotted[1]
    assert (tmp_path / "2026.eng.contoso.com.key").exists()
    assert spaced[0] == 2 and spaced[2].strip() == (
        "mxflow: --selector 's 1': expected a name such as s1 or 2026.eng"
    )


async def test_auth_check_prints_authentication_results(tmp_path: Path) -> None:
    message = tmp_path / "message.eml"
    message.write_bytes(b"Authentication-Results: mx.host.example; dmarc=pass\r\n" + MESSAGE)
    records = {
        "contoso.com": "v=spf1 ip4:127.77.0.1 -all",
        "_dmarc.contoso.com": "v=DMARC1; p=reject",
    }
    async with serve_txt(records) as server:
        code, out, err = await mxflow(
            "auth",
            "check",
            str(message),
            "--ip",
            "127.66.0.9",
            "--helo",
            "spoof.example",
            "--mail-from",
            "alice@contoso.com",
            "--resolver",
            f"{server.host}:{server.port}",
            "--authserv-id",
            "mx.host.example",
        )
    assert code == 1, err  # compauth=fail: exit status 1 (issue 10; it was 0)
    assert out.startswith("Authentication-Results: mx.host.example;\n")
    assert "\tspf=fail" in out
    assert "\tdkim=none" in out
    assert "\tdmarc=fail (p=reject sp=reject dis=reject) header.from=contoso.com;" in out
    assert "\tarc=none" in out
    assert "\tcompauth=fail reason=000" in out
    assert out.count("dmarc=") == 1  # the forged result in our name is not repeated


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--ip", "not-an-ip"], "is not an IP address"),
        (["--resolver", "127.0.0.1:notaport"], "--resolver"),
        (["MISSING"], "cannot read message"),
    ],
)
async def test_auth_check_bad_input_is_one_line(
    tmp_path: Path, args: list[str], problem: str
) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    defaults = {"--ip": "127.0.0.1", "--resolver": "127.0.0.1:9"}
    options: list[str] = []
    file_arg = str(message)
    if args == ["MISSING"]:
        file_arg = str(tmp_path / "missing.eml")
    else:
        defaults[args[0]] = args[1]
    for flag, value in defaults.items():
        options += [flag, value]
    code, _, err = await mxflow(
        "auth", "check", file_arg, "--helo", "h.example", "--mail-from", "a@b.example", *options
    )
    assert code == 2
    assert problem in err
    assert err.strip().count("\n") == 0
