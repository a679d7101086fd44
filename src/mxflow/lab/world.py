"""The lab's Internet: who sends, from which loopback address, and what their DNS says.

Addresses follow DESIGN.md §5: contoso.com's parties come from the topology (gateway
127.10.10.1, archiver 127.10.20.1, the host 127.40.0.10 sending from 127.40.1.1);
Contoso's users submit from 127.131.107.21 (the reference's public IP, mapped); the
Internet's senders live in 127.66.x (legitimate, list, spoofers, malware) and 127.99.x
(spam sources, listed in the lab's blocklist zone); the recipients' MX hosts in 127.77.x.
Every domain here publishes its own SPF, DKIM key and DMARC policy in the lab's DNS.

Two kinds of legitimate sender, as on the real Internet: some sign with their own domain
(aligned DKIM: DMARC passes wherever the signature survives), some send through a mail
service that signs with its own domain (DMARC then rests on SPF alone). Behind a relay
that hides the sender's IP the second kind fails DMARC: that is scenario 2's problem.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mxflow.auth.keys import SigningKey, generate_key, load_signing_key
from mxflow.dns.zone import Zone, parse_zone
from mxflow.records.plan import lab_zones, plan_records, quote_txt
from mxflow.records.topology import Topology

DNS_IP = "127.53.0.1"
CONTOSO_USERS_IP = "127.131.107.21"  # Contoso's public IP 131.107.21.231, mapped
RECIPIENT_MX_IP = "127.77.0.1"  # northwind.test and adatum.test: contoso's correspondents
SENDER_MX_IP = "127.77.0.9"  # the internet senders' own MX: where bounces land
BLOCKLIST_ZONE = "bl.lab.test"
ESP_DOMAIN = "esp-mailer.test"
LITERAL_SPF_DOMAIN = "literal.spf-reference.lab.test"
# RFC 8463 §A.2's example Ed25519 key: its public half is records.plan.LAB_DKIM_KEY, the
# key the lab's DNS publishes for the host's selector1 of contoso.com.
HOST_DKIM_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
CONTOSO_MAILBOXES = ("alice", "bob", "carol", "dan", "finance", "ceo")
OUTBOUND_DOMAINS = ("northwind.test", "adatum.test")


def reference_spf_literal(third_party_ip: str) -> str:
    """The 2017 reference's record, with 10.10.10.1 mapped into the lab."""
    return f"v=spf1 ipv4: {third_party_ip} include:spf.protection.outlook.com -all"


@dataclass
class Peer:
    """An internet sender: its class, domain, address and what it signs with."""

    kind: str  # legitimate | list | spam | spoof | malware | bypass
    name: str
    ip: str
    domain: str  # the From domain it uses
    dmarc: str = ""  # p= of its own domain ("" = no DMARC record)
    signs_as: str = ""  # DKIM d= ("" = does not sign)
    spf_all: str = "-all"
    to_host: bool = False  # connects to the host's own name, not to the MX
    key: SigningKey | None = None
    key_record: str = ""

    @property
    def helo(self) -> str:
        return f"mail.{self.domain}"


def _peers() -> list[Peer]:
    return [
        Peer("legitimate", "fabrikam", "127.66.0.11", "fabrikam.test", "reject", "fabrikam.test"),
        Peer("legitimate", "tailspin", "127.66.0.12", "tailspintoys.test", "quarantine",
             "tailspintoys.test"),
        Peer("legitimate", "wingtip (via ESP)", "127.66.0.13", "wingtiptoys.test", "reject",
             ESP_DOMAIN),
        Peer("legitimate", "litware (via ESP)", "127.66.0.14", "litware.test", "quarantine",
             ESP_DOMAIN),
        Peer("list", "adventure-works list", "127.66.1.1", "lists.adventure-works.test", "none",
             "lists.adventure-works.test"),
        Peer("spam", "spam source 1", "127.99.0.1", "cheap-deals.test", spf_all="~all"),
        Peer("spam", "spam source 2", "127.99.0.2", "best-offers.test", spf_all="~all"),
        Peer("spam", "spam source 3", "127.99.0.3", "winner-notice.test", spf_all="?all"),
        Peer("spoof", "spoofer of contoso.com", "127.66.7.7", "contoso.com"),
        Peer("spoof", "spoofer of fabrikam.test", "127.66.7.8", "fabrikam.test"),
        Peer("malware", "malware sender", "127.66.8.8", "invoice-portal.test", "none",
             "invoice-portal.test"),
        Peer("bypass", "direct-to-host spammer", "127.99.9.9", "promo-blast.test",
             spf_all="~all", to_host=True),
    ]  # fmt: skip


@dataclass
class World:
    """The peers with their keys, and every zone the lab's DNS serves for a scenario."""

    topology: Topology
    peers: list[Peer] = field(default_factory=_peers)
    esp_key: SigningKey | None = None
    esp_record: str = ""

    def __post_init__(self) -> None:
        for peer in self.peers:
            if peer.signs_as and peer.signs_as != ESP_DOMAIN:
                pem, peer.key_record = generate_key("ed25519")
                peer.key = load_signing_key(pem)
        pem, self.esp_record = generate_key("ed25519")
        self.esp_key = load_signing_key(pem)
        for peer in self.peers:
            if peer.signs_as == ESP_DOMAIN:
                peer.key = self.esp_key

    def of_kind(self, kind: str) -> list[Peer]:
        return [p for p in self.peers if p.kind == kind]

    def zones(self, scenario: int) -> list[Zone]:
        """contoso.com as planned for `scenario`, the other parties' names, the Internet."""
        zones = [plan_records(self.topology, scenario).zone(), *lab_zones(self.topology)]
        own = {p.domain for p in self.peers if p.domain != self.topology.domain}
        texts = [self._sender_zone(d) for d in sorted(own)]
        texts += [self._esp_zone(), self._blocklist_zone(), self._reference_zone()]
        texts += [
            f"$ORIGIN {d}.\n@ 300 IN MX 10 mx\nmx 300 IN A {RECIPIENT_MX_IP}\n"
            '@ 300 IN TXT "v=spf1 -all"\n'
            for d in OUTBOUND_DOMAINS
        ]
        zones += [parse_zone(t, filename="<lab>") for t in texts]
        return zones

    def _sender_zone(self, domain: str) -> str:
        peers = [p for p in self.peers if p.domain == domain]
        ips = " ".join(f"ip4:{p.ip}" for p in peers if p.kind != "spoof")
        spf_all = next((p.spf_all for p in peers if p.kind != "spoof"), "-all")
        lines = [
            f"$ORIGIN {domain}.",
            "@ 300 IN MX 10 mx",
            f"mx 300 IN A {SENDER_MX_IP}",
            f"@ 300 IN TXT {quote_txt(f'v=spf1 {ips} {spf_all}'.replace('  ', ' '))}",
        ]
        lines += [f"mail 300 IN A {p.ip}" for p in peers if p.kind != "spoof"][:1]
        dmarc = next((p.dmarc for p in peers if p.dmarc), "")
        if dmarc:
            lines.append(f"_dmarc 300 IN TXT {quote_txt(f'v=DMARC1; p={dmarc}')}")
        for p in peers:
            if p.key_record and p.signs_as == domain:
                lines.append(f"lab._domainkey 300 IN TXT {quote_txt(p.key_record)}")
        return "\n".join(lines) + "\n"

    def _esp_zone(self) -> str:
        return (
            f"$ORIGIN {ESP_DOMAIN}.\n"
            f"lab._domainkey 300 IN TXT {quote_txt(self.esp_record)}\n"
            f"@ 300 IN MX 10 mx\nmx 300 IN A {SENDER_MX_IP}\n"
        )

    def _blocklist_zone(self) -> str:
        """The lab's DNS blocklist: every spam source, as `reversed-ip.zone A 127.0.0.2`."""
        lines = [f"$ORIGIN {BLOCKLIST_ZONE}.", '@ 300 IN TXT "lab blocklist"']
        for p in self.peers:
            if p.kind in ("spam", "bypass"):
                reversed_ip = ".".join(reversed(p.ip.split(".")))
                lines.append(f"{reversed_ip} 300 IN A 127.0.0.2")
        return "\n".join(lines) + "\n"

    def _reference_zone(self) -> str:
        """The reference's literal record, published at its own name for evaluation."""
        gateway = self.topology.gateway
        ip = gateway.ips[0] if gateway else "127.10.10.1"
        origin = LITERAL_SPF_DOMAIN.split(".", 1)[1]
        owner = LITERAL_SPF_DOMAIN.split(".", 1)[0]
        return f"$ORIGIN {origin}.\n{owner} 300 IN TXT {quote_txt(reference_spf_literal(ip))}\n"


def host_outbound_ip(topology: Topology) -> str:
    """The first address of the host's outbound pool: where its outbound mail comes from."""
    pool = ipaddress.ip_network(topology.host.outbound_ips[0], strict=False)
    return str(pool.network_address + 1) if pool.num_addresses > 1 else str(pool.network_address)
