"""Names phishers impersonate, and how a look-alike of one is recognised.

A phisher needs the reader to believe the mail or the link comes from an organisation the
reader trusts: so the brand shows up in a display name, a link text or a domain that the
brand does not own (`paypal-secure-login.com`, `rnicrosoft.com`, `paypa1.com`). The list is
of brands phished at large (the Anti-Phishing Working Group's most-targeted sectors: payment,
webmail and cloud, retail, parcel delivery, social, banks); a site adds its own through
`[filter] scores` only for the weights, the names are data here.
"""

from __future__ import annotations

BRANDS: dict[str, tuple[str, ...]] = {
    # brand word -> organisational domains it really sends from / links to
    "paypal": ("paypal.com", "paypal.me", "paypal-communication.com"),
    "apple": ("apple.com", "icloud.com", "me.com"),
    "icloud": ("icloud.com", "apple.com"),
    "microsoft": ("microsoft.com", "office.com", "live.com", "outlook.com", "office365.com"),
    "office365": ("microsoft.com", "office.com", "office365.com"),
    "outlook": ("microsoft.com", "outlook.com", "live.com", "office.com"),
    "amazon": ("amazon.com", "amazon.co.uk", "amazon.de", "amazonaws.com", "amazon.fr"),
    "netflix": ("netflix.com",),
    "dhl": ("dhl.com", "dhl.de"),
    "fedex": ("fedex.com",),
    "usps": ("usps.com",),
    "ebay": ("ebay.com", "ebay.co.uk", "ebay.de"),
    "google": (
        "google.com",
        "gmail.com",
        "youtube.com",
        "googlemail.com",
        "googleusercontent.com",
        "googleapis.com",
        "googlegroups.com",
        "googleblog.com",
    ),
    "facebook": ("facebook.com", "facebookmail.com", "fb.com", "meta.com"),
    "instagram": ("instagram.com", "facebookmail.com"),
    "linkedin": ("linkedin.com",),
    "docusign": ("docusign.com", "docusign.net"),
    "dropbox": ("dropbox.com", "dropboxmail.com"),
    "wellsfargo": ("wellsfargo.com",),
    "chase": ("chase.com", "jpmorgan.com"),
    "citibank": ("citibank.com", "citi.com"),
    "hsbc": ("hsbc.com", "hsbc.co.uk"),
    "barclays": ("barclays.com", "barclays.co.uk"),
    "coinbase": ("coinbase.com",),
    "binance": ("binance.com",),
    "irs": ("irs.gov",),
    "hmrc": ("hmrc.gov.uk", "gov.uk"),
}
# brands whose name is also an ordinary word: only a domain look-alike counts, not a mention
COMMON_WORDS = frozenset({"apple", "chase", "outlook", "amazon"})
# characters that pass for letters in a domain or a word
CONFUSABLE = str.maketrans(
    {"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "$": "s", "@": "a"}
)


def normalise(label: str, one: str = "l") -> str:
    """A domain label or word with digit-for-letter swaps and `rn` -> `m` undone (`1` read
    as `one`: it passes for `l` and for `i`)."""
    swapped = label.lower().replace("1", one).translate(CONFUSABLE)
    return swapped.replace("rn", "m").replace("vv", "w")


def owns(brand: str, org_domain: str) -> bool:
    """Whether `org_domain` is one the brand itself uses."""
    return org_domain in BRANDS.get(brand, ())


def brand_in_label(label: str) -> str:
    """The brand a domain label imitates without being it: contains it (`paypal-login`) or
    spells it with swapped characters (`paypa1`, `rnicrosoft`). The brand's own label
    (`paypal` of paypal.de) is no imitation; a brand that is also a word must stand alone
    between hyphens (`chase-alert`, not `purchase`)."""
    plain = label.lower()
    swaps = (normalise(plain), normalise(plain, one="i"))
    for brand in BRANDS:
        if plain == brand:
            return ""
        if brand in swaps:
            return brand
        if brand in COMMON_WORDS or len(brand) < 4:
            if brand in plain.split("-"):
                return brand
        elif brand in plain or any(brand in swapped for swapped in swaps):
            return brand
    return ""
