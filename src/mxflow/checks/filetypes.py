"""What a file really is, from its first bytes rather than its name.

Attackers rename executables (`invoice.pdf` that starts with `MZ`), so the attachment
policy asks the content. Only the kinds the policy acts on are told apart.
"""

from __future__ import annotations

import re

EXECUTABLE_EXTENSIONS = frozenset(
    [
        "exe",
        "com",
        "scr",
        "pif",
        "cpl",
        "dll",
        "sys",
        "msi",
        "msp",
        "bat",
        "cmd",
        "vbs",
        "vbe",
        "js",
        "jse",
        "wsf",
        "wsh",
        "hta",
        "ps1",
        "psm1",
        "jar",
        "lnk",
        "reg",
        "inf",
        "scf",
        "msc",
        "app",
        "elf",
        "apk",
        "iso",
        "img",
        "vhd",
    ]
)
SCRIPT_EXTENSIONS = frozenset(
    ["vbs", "vbe", "js", "jse", "wsf", "wsh", "hta", "ps1", "psm1", "bat", "cmd", "sh"]
)
DOCUMENT_EXTENSIONS = frozenset(
    [
        "pdf",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "ppt",
        "pptx",
        "txt",
        "rtf",
        "jpg",
        "jpeg",
        "png",
        "gif",
        "bmp",
        "tif",
        "tiff",
        "csv",
        "odt",
        "ods",
        "zip",
    ]
)
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SCRIPT_MARKERS = re.compile(
    rb"(?i)(wscript\.shell|createobject\s*\(|activexobject|powershell(\.exe)?\s+-|"
    rb"invoke-expression|frombase64string|shell\.application|<\s*hta:application)"
)

KIND_EXTENSIONS = {
    "executable": {"exe", "com", "scr", "pif", "cpl", "dll", "sys", "elf", "app", "bin"},
    "msi": {"msi", "msp"},
    "zip": {"zip", "jar", "docx", "xlsx", "pptx", "docm", "xlsm", "pptm", "odt", "ods", "apk"},
    "gzip": {"gz", "tgz"},
    "ole": {"doc", "xls", "ppt", "msg", "msi", "dot", "xlt"},
    "pdf": {"pdf"},
    "png": {"png"},
    "jpeg": {"jpg", "jpeg"},
    "gif": {"gif"},
    "script": SCRIPT_EXTENSIONS | {"txt"},
}


def sniff(data: bytes) -> str:
    """The kind of `data`: executable, script, shebang, zip, gzip, ole, pdf, png, jpeg, gif,
    rar, 7z, diskimage or other."""
    head = data[:8]
    if head[:2] == b"MZ":
        return "executable"
    if head[:4] in (b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe"):
        return "executable"
    if head[:4] == b"\xce\xfa\xed\xfe":
        return "executable"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head == _OLE_MAGIC:
        return "ole"
    if head[:5] == b"%PDF-":
        return "pdf"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] in (b"GIF8",):
        return "gif"
    if head[:4] == b"Rar!":
        return "rar"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    vhd_footer = data[-512:-504] if len(data) >= 512 else b""  # a fixed VHD's only marker
    if data[0x8001:0x8006] == b"CD001" or b"conectix" in (head, vhd_footer) or head == b"vhdxfile":
        return "diskimage"  # ISO 9660 / VHD / VHDX: mounts on a double click, hides its files
    if _SCRIPT_MARKERS.search(data[:65536]):
        return "script"  # Windows script host / PowerShell: runs on a double click
    if head[:2] == b"#!":
        return "shebang"  # a Unix script: needs a shell to run, common on tech lists
    return "other"


def extensions(filename: str) -> list[str]:
    """The dotted extensions of a name, lower case: `a.PDF.exe` -> ['pdf', 'exe']."""
    name = filename.strip().strip(".").lower().rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    parts = name.split(".")
    return [p.strip() for p in parts[1:] if p.strip()]


def has_vba(data: bytes, kind: str) -> bool:
    """An Office document with a VBA macro project (OLE2 or OOXML zip)."""
    if kind == "ole":
        return b"_\x00V\x00B\x00A\x00_\x00P\x00R\x00O\x00J\x00E\x00C\x00T" in data or (
            b"V\x00B\x00A\x00" in data and b"M\x00a\x00c\x00r\x00o\x00s" in data
        )
    return False
