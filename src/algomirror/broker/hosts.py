"""OpenAlgo host URLs: parsed and rebuilt, and the administrator's allow-list of account hosts.

A host URL is typed by a user and then called by the server, so it is a server-side request forgery
vector. :func:`normalize_host_url` accepts only ``http(s)://host[:port][/base/path]`` and rebuilds it from
its parts: no query, fragment, user name or password, no whitespace or control character, no ``.``/``..``
path segment, no percent-encoding. The client appends its own fixed paths (``{base}/api/v1/{endpoint}``),
so no host URL can make it call anything but an OpenAlgo endpoint.

:class:`HostPolicy` is the allow-list (the ``account_host_allowlist`` app setting): unrestricted by
default; when restricted, a host is allowed if it is loopback (unless that is switched off), a listed
name, or an address inside a listed address or CIDR range. Names are compared as typed and never
resolved, so a name gains nothing from what it resolves to; addresses typed in a URL are matched
against the listed addresses and ranges.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from algomirror.broker.errors import RejectedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")
_NAME_MAX = 253


class HostURLError(ValueError):
    """A host URL that is refused; ``str(exc)`` is the user-facing reason (it never quotes the URL)."""


class HostNotAllowedError(RejectedError):
    """The host is not on the administrator's allow-list: the call was refused and nothing was sent."""


def _bad_char(value: str) -> bool:
    return any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Zs") for c in value)


def _host_name(raw: str) -> str:
    """The lower-case host of a URL's authority (IPv6 in brackets). Raises HostURLError."""
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise HostURLError("Host URL has an invalid IPv6 address.")
        try:
            address = ipaddress.IPv6Address(raw[1:-1])
        except ValueError:
            raise HostURLError("Host URL has an invalid IPv6 address.") from None
        if address.scope_id:
            raise HostURLError("Host URL must not name an IPv6 zone (%…).")
        return f"[{address.compressed}]"
    return check_host_name(raw)


def check_host_name(raw: str) -> str:
    """``raw`` as a lower-case host name or dotted IPv4 address (one trailing dot dropped).

    Numeric forms other than a full dotted quad (``127.1``, ``2130706433``, ``0x7f.0.0.1``) are refused:
    resolvers read them as addresses, which would slip past an allow-list of names. Raises
    HostURLError."""
    if not raw.isascii():
        raise HostURLError("Host name must be ASCII (use its xn-- form).")
    name = raw.lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if not name or len(name) > _NAME_MAX or not all(_LABEL.match(label) for label in labels):
        raise HostURLError("Host must be a host name or an IP address.")
    if _NUMERIC_LABEL.match(labels[-1]) or all(_NUMERIC_LABEL.match(label) for label in labels):
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise HostURLError("Host must be a full IP address like 192.168.1.10.") from None
    return name


def normalize_host_url(value: str) -> str:
    """The host URL rebuilt from its parts: ``scheme://host[:port][/base/path]`` with a lower-case
    scheme and host, the port as a plain number, and no trailing slash.

    Raises :class:`HostURLError` (a ValueError) for anything else: another scheme, no host, a query
    (``?``, even empty), a fragment (``#``), a user name or password, whitespace or control characters,
    a port outside 1–65535, or a path segment that is empty, ``.``, ``..`` or has characters other than
    letters, digits and ``-._~``."""
    if not value.lower().startswith(("http://", "https://")):
        raise HostURLError("Host URL must start with http:// or https:// and name a host.")
    if _bad_char(value):
        raise HostURLError("Host URL must not contain spaces or control characters.")
    if "?" in value:
        raise HostURLError("Host URL must not contain a query (?…).")
    if "#" in value:
        raise HostURLError("Host URL must not contain a fragment (#…).")
    if "\\" in value:
        raise HostURLError("Host URL must not contain a backslash.")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise HostURLError("Host URL must look like http://127.0.0.1:5000.") from None
    if parts.scheme not in ("http", "https") or not value.lower().startswith(f"{parts.scheme}://"):
        raise HostURLError("Host URL must start with http:// or https:// and name a host.")
    if "@" in parts.netloc:
        raise HostURLError("Host URL must not contain a user name or password.")
    netloc = parts.netloc
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise HostURLError("Host URL has an invalid IPv6 address.")
        host_part, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise HostURLError("Host URL has an invalid port (1–65535).")
        has_port, port_text = bool(rest), rest[1:]
    else:
        host_part, colon, port_text = netloc.partition(":")
        has_port = bool(colon)
    if not host_part:
        raise HostURLError("Host URL must start with http:// or https:// and name a host.")
    host = _host_name(host_part)
    port = ""
    if has_port:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise HostURLError("Host URL has an invalid port (1–65535).")
        port = f":{int(port_text)}"
    segments = parts.path.rstrip("/").split("/")[1:] if parts.path.rstrip("/") else []
    for segment in segments:
        if not segment or segment in (".", "..") or not _SEGMENT.match(segment):
            raise HostURLError(
                "Host URL path may contain only letters, digits and - . _ ~ between single slashes."
            )
    path = "".join(f"/{segment}" for segment in segments)
    return f"{parts.scheme}://{host}{port}{path}"


def url_host(host_url: str) -> str:
    """The host of an already normalized host URL (IPv6 in brackets); ValueError if it is not one."""
    rest = normalize_host_url(host_url).split("://", 1)[1]
    authority = rest.split("/", 1)[0]
    if authority.startswith("["):
        return authority[: authority.index("]") + 1]
    return authority.split(":", 1)[0]


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _local(host: str) -> bool:
    if host == "localhost":
        return True
    address = _address(host)
    return address is not None and (address.is_loopback or address.is_unspecified)


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which hosts accounts may use. ``restricted=False`` (the default) allows every host; otherwise a
    host must be loopback (``127.0.0.0/8``, ``::1``, ``localhost``, and the unspecified address, which
    reaches this machine; only while ``allow_loopback``), one of ``names``, or inside one of
    ``networks`` (single addresses are /32 or /128 networks)."""

    restricted: bool = False
    allow_loopback: bool = True
    names: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str, *, restricted: bool = True, allow_loopback: bool = True) -> HostPolicy:
        """A policy from a list of entries separated by commas, spaces or new lines: host names, IP
        addresses (IPv6 with or without brackets) and CIDR ranges (``10.0.0.0/8``; host bits are
        cleared). Duplicates are dropped. Raises ValueError naming the first entries it cannot read."""
        names: list[str] = []
        networks: list[IPNetwork] = []
        bad: list[str] = []
        for entry in re.split(r"[\s,]+", text.strip()):
            if not entry:
                continue
            bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
            try:
                network = ipaddress.ip_network(bare, strict=False)
            except ValueError:
                network = None
            if network is not None:
                if network not in networks:
                    networks.append(network)
                continue
            try:
                name = check_host_name(entry)
            except HostURLError:
                bad.append(entry)
                continue
            if _address(name) is not None:
                as_net = ipaddress.ip_network(name)
                if as_net not in networks:
                    networks.append(as_net)
            elif name not in names:
                names.append(name)
        if bad:
            shown = ", ".join(repr(b[:60]) for b in bad[:3])
            raise ValueError(f"not a host name, IP address or CIDR range: {shown}")
        return cls(restricted, allow_loopback, tuple(names), tuple(networks))

    @property
    def entries(self) -> tuple[str, ...]:
        """The listed names and ranges as text (an address alone for a /32 or /128)."""
        ranges = [str(n.network_address) if n.num_addresses == 1 else str(n) for n in self.networks]
        return (*self.names, *ranges)

    def allows_host(self, host: str) -> bool:
        """Whether the host (lower case, IPv6 in brackets, as :func:`url_host` gives it) may be used."""
        if not self.restricted:
            return True
        if self.allow_loopback and _local(host):
            return True
        address = _address(host)
        if address is None:
            return host in self.names
        return any(address.version == n.version and address in n for n in self.networks)

    def allows(self, host_url: str) -> bool:
        """Whether an account may use ``host_url``; False for a URL :func:`normalize_host_url` refuses."""
        try:
            return self.allows_host(url_host(host_url))
        except ValueError:
            return False

    def check(self, host_url: str, *, endpoint: str = "") -> None:
        """Raise :class:`HostNotAllowedError` unless :meth:`allows` ``host_url``."""
        if not self.allows(host_url):
            raise HostNotAllowedError(NOT_ALLOWED, endpoint=endpoint)

    # ----------------------------------------------------------------------------- storage

    def to_json(self) -> str:
        """The app-setting value (see :meth:`from_json`)."""
        return json.dumps(
            {"restricted": self.restricted, "loopback": self.allow_loopback, "entries": list(self.entries)},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, value: str | None) -> HostPolicy:
        """The stored policy; None (never set) is unrestricted. A value that cannot be read restricts to
        loopback: an allow-list that was meant to hold must not fall open. Never raises."""
        if value is None:
            return cls()
        try:
            data: Any = json.loads(value)
            entries = data["entries"]
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise ValueError("entries")
            return cls.parse(
                " ".join(entries),
                restricted=data["restricted"] is not False,
                allow_loopback=data["loopback"] is not False,
            )
        except (ValueError, KeyError, TypeError):
            return cls(restricted=True, allow_loopback=True)


UNRESTRICTED = HostPolicy()
NOT_ALLOWED = "host not on the administrator's allow-list of account hosts; nothing was sent"

__all__ = [
    "NOT_ALLOWED",
    "UNRESTRICTED",
    "HostNotAllowedError",
    "HostPolicy",
    "HostURLError",
    "check_host_name",
    "normalize_host_url",
    "url_host",
]
