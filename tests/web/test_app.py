"""The admin UI without a browser: Starlette's test client against the real app, its real
account store, trace store and quarantine files (sessions, CSRF, throttling, roles)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mxflow.config import NodeConfig
from mxflow.mail import MessageContext, Symbol, Verdict
from mxflow.store.quarantine import Quarantine
from mxflow.store.trace import TraceStore
from mxflow.web.accounts import Accounts, hash_password, verify_password
from mxflow.web.app import create_app
from tests.engine.helpers import node_config

PASSWORD = "correct horse battery"


def _config(tmp_path: Path, *, secure: bool = False) -> NodeConfig:
    return node_config(
        "gw",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com"}, {"domain": "fabrikam.com"}],
        extra={"filter": {}, "web": {"secure_cookies": secure}},
    )


def _accounts(config: NodeConfig) -> Accounts:
    assert config.web.users_db is not None
    return Accounts(config.web.users_db)


def _login(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    token = page.text.split('name="login_token" value="', 1)[1].split('"', 1)[0]
    return client.post(
        "/login",
        data={"username": name, "password": password, "login_token": token, "next": "/"},
        follow_redirects=False,
    )


def _csrf(html: str) -> str:
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_passwords_are_salted_scrypt() -> None:
    stored = hash_password("s3cret-pass")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert stored != hash_password("s3cret-pass")
    assert verify_password("s3cret-pass", stored) and not verify_password("other", stored)


def test_cookies_headers_and_login_csrf(tmp_path: Path) -> None:
    config = _config(tmp_path, secure=True)
    _accounts(config).add_user("admin", PASSWORD, "admin", [])
    with TestClient(create_app(config), base_url="https://testserver") as client:
        page = client.get("/login")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        refused = client.post("/login", data={"username": "admin", "password": PASSWORD})
        assert refused.status_code == 400  # no login token: a cross-site login attempt
        done = _login(client, "admin")
        assert done.status_code == 303
        cookie = done.headers["set-cookie"].lower()
        for flag in ("httponly", "secure", "samesite=strict", "path=/"):
            assert flag in cookie
        assert client.get("/").status_code == 200


def test_failed_logins_are_throttled(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _accounts(config).add_user("admin", PASSWORD, "admin", [])
    with TestClient(create_app(config)) as client:
        for _ in range(5):
            assert _login(client, "admin", "wrong-password").status_code == 401
        locked = _login(client, "admin")  # even the right password, for a while
        assert locked.status_code == 429 and "Too many failed logins" in locked.text
        assert client.get("/", follow_redirects=False).status_code == 303


def test_sessions_expire_when_idle(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "web.sqlite", idle=0.2)
    accounts.add_user("admin", PASSWORD, "admin", [])
    user = accounts.authenticate("admin", PASSWORD)
    assert user is not None and accounts.authenticate("admin", "nope") is None
    token, _ = accounts.open_session(user)
    assert accounts.session(token) is not None
    time.sleep(0.3)
    assert accounts.session(token) is None


def _quarantine(config: NodeConfig, rcpt: str, *, malware: bool = False) -> str:
    ctx = MessageContext(client_ip="127.9.9.9", mail_from="x@spam.test", rcpt_tos=[rcpt])
    ctx.raw = (
        b"Subject: offer\r\nMessage-ID: <q@spam.test>\r\nContent-Type: text/html\r\n\r\n"
        b"<p><b>hi</b> there</p><script>alert('x')</script>\r\n"
    )
    name = "CLAM_VIRUS" if malware else "BAYES_SPAM"
    verdict = Verdict(score=20, scl=9, reason="spam", symbols=[Symbol(name, 20.0, "")])
    return Quarantine(config.data_dir / "quarantine").store(ctx, verdict)


def test_domain_admin_sees_only_their_domains(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _accounts(config).add_user("dana", PASSWORD, "domain-admin", ["fabrikam.com"])
    with TraceStore(config.trace_db, node="gw") as trace:
        for qid, rcpt in (("Q1", "carl@contoso.com"), ("Q2", "eve@fabrikam.com")):
            trace.record(qid, "received", message_id=f"<{qid}@x>", recipient=rcpt, status="Pending")
    mine = _quarantine(config, "eve@fabrikam.com", malware=True)
    theirs = _quarantine(config, "bob@contoso.com")
    with TestClient(create_app(config)) as client:
        assert _login(client, "dana").headers["location"] == "/trace"
        page = client.get("/trace")
        assert "eve@fabrikam.com" in page.text and "carl@contoso.com" not in page.text
        assert client.get("/trace/message?id=Q1@x").status_code == 404
        assert client.get("/trace/message?id=Q2@x").status_code == 200
        for admin_only in ("/", "/queue", "/connectors", "/dns"):
            assert client.get(admin_only, follow_redirects=False).status_code in (303, 403)
        assert client.get(f"/quarantine/{theirs}").status_code == 404
        item = client.get(f"/quarantine/{mine}")
        assert "only by an administrator" in item.text
        body = item.text.split('<pre class="body">', 1)[1].split("</pre>", 1)[0]
        assert body == "hi there"  # the HTML as text: no markup, no script, nothing rendered
        refused = client.post(
            f"/quarantine/{mine}/release", data={"csrf": _csrf(item.text)}, follow_redirects=False
        )
        assert "only+by+an+administrator" in refused.headers["location"].replace("%20", "+")
        forged = client.post(f"/quarantine/{mine}/delete", data={"csrf": "forged"})
        assert forged.status_code == 400
        assert Quarantine(config.data_dir / "quarantine").get(mine).state == "held"


def test_dns_page_without_a_resolver_says_so(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _accounts(config).add_user("admin", PASSWORD, "admin", [])
    with TestClient(create_app(config)) as client:
        _login(client, "admin")
        assert "No resolver is configured" in client.get("/dns").text
        assert "contoso.com" in client.get("/connectors").text


@pytest.mark.parametrize(
    "args", [["--role", "domain-admin"], ["--role", "admin", "--domain", "x.com"]]
)
async def test_user_add_refuses_bad_roles(tmp_path: Path, args: list[str]) -> None:
    import asyncio
    import sys

    from tests.clirun import ROOT

    config_file = tmp_path / "n.toml"
    config_file.write_text(
        '[node]\nname = "n"\n[[listeners]]\naddress = "127.0.0.1"\nport = 0\ntls = "none"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mxflow", "web", "--config", str(config_file), "user", "add",
        "someone", *args, stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(PASSWORD.encode() + b"\n"), 60)
    assert process.returncode == 2 and b"domain" in err


async def test_dns_health_through_the_nodes_resolver(tmp_path: Path) -> None:
    """The reference's malformed SPF record is reported, asked of the node's own resolver."""
    import asyncio

    from tests.dnsserver import serve_zone_text

    zone = (
        "$ORIGIN contoso.com.\n$TTL 3600\n"
        "@ IN SOA ns1 hostmaster 1 3600 600 86400 300\n@ IN NS ns1\nns1 IN A 127.0.0.53\n"
        "@ IN MX 10 mx.contoso.com.\nmx IN A 127.10.10.1\n"
        '@ IN TXT "v=spf1 ipv4: 10.10.10.1 include:spf.protection.outlook.com -all"\n'
    )
    async with serve_zone_text(zone) as dns_server:
        config = node_config(
            "gw",
            tmp_path / "gw",
            domains=[{"domain": "contoso.com"}],
            extra={
                "web": {"secure_cookies": False},
                "dns": {"resolver": f"{dns_server.host}:{dns_server.port}"},
            },
        )
        _accounts(config).add_user("admin", PASSWORD, "admin", [])
        with TestClient(create_app(config)) as client:
            _login(client, "admin")
            page = await asyncio.to_thread(client.get, "/dns")
    assert page.status_code == 200
    assert "contoso.com" in page.text and "problems" in page.text
    assert "ipv4" in page.text and 'class="pill bad">error' in page.text


def test_block_sender_makes_the_filter_reject_its_mail(tmp_path: Path) -> None:
    """The quarantine's "block sender" is enforced, not only listed: the address goes to
    the node's block file, which the sender-list check reads."""
    import asyncio

    from mxflow.checks.lists import SenderListCheck
    from mxflow.checks.node import node_policy
    from mxflow.mail import Action, Phase

    config = _config(tmp_path)
    _accounts(config).add_user("admin", PASSWORD, "admin", [])
    qid = _quarantine(config, "bob@contoso.com")
    with TestClient(create_app(config)) as client:
        _login(client, "admin")
        item = client.get(f"/quarantine/{qid}")
        done = client.post(f"/quarantine/{qid}/block-sender", data={"csrf": _csrf(item.text)})
        assert done.status_code == 200 and "x@spam.test" in done.text
    policy = node_policy(config)
    assert policy.block_file is not None and "x@spam.test" in policy.block_file.read_text()
    check = SenderListCheck(policy)
    ctx = MessageContext(client_ip="127.9.9.9", mail_from="x@spam.test", rcpt_tos=["b@c.com"])
    assert asyncio.run(check.check(ctx)).action is Action.REJECT
    other = MessageContext(client_ip="127.9.9.9", mail_from="y@ham.test", rcpt_tos=["b@c.com"])
    assert asyncio.run(SenderListCheck(policy).check(other)).action is None
    assert check.phase is Phase.ENVELOPE
