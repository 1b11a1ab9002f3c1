"""Which channels are trunks, which are operator phones, and where the DID is.

Direction is not in any AMI event: it follows from what kind of channel started the call and
what it reached. The defaults are the conventions most dialplans share (FreePBX puts provider
calls in `from-pstn`, plain Asterisk examples in `from-trunk`; DAHDI lines are the PSTN;
FreePBX keeps the DID in `FROM_DID`); the config file overrides every one of them.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import Enum


class Kind(Enum):
    TRUNK = "trunk"
    PHONE = "phone"
    LOCAL = "local"


def _globs(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.IGNORECASE)


@dataclass(slots=True, frozen=True)
class ChannelRules:
    trunk_contexts: tuple[str, ...] = (
        "from-trunk*",
        "from-pstn*",
        "from-external*",
        "from-provider*",
        "from-sip-external",
    )
    trunk_endpoints: tuple[str, ...] = ()
    trunk_channels: tuple[str, ...] = ("DAHDI/*",)
    did_variables: tuple[str, ...] = ("FROM_DID", "__FROM_DID")
    extensions: dict[str, str] = field(default_factory=dict)
    _ctx: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _ep: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _chan: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ctx", _globs(self.trunk_contexts))
        object.__setattr__(self, "_ep", _globs(self.trunk_endpoints))
        object.__setattr__(self, "_chan", _globs(self.trunk_channels))

    def classify(self, channel: str, context: str) -> tuple[Kind, str]:
        """The kind of a channel and its endpoint (`PJSIP/101-0000001a` -> PHONE, `101`)."""
        if channel.startswith("Local/"):
            return Kind.LOCAL, local_pair_key(channel)
        endpoint = endpoint_of(channel)
        if (
            (self._chan is not None and self._chan.match(channel))
            or (self._ep is not None and self._ep.match(endpoint))
            or (self._ctx is not None and self._ctx.match(context))
        ):
            return Kind.TRUNK, endpoint
        return Kind.PHONE, endpoint

    def trunk_context(self, context: str) -> bool:
        """Is `context` one that calls from a provider arrive in (`trunk_contexts`)?"""
        return self._ctx is not None and self._ctx.match(context) is not None

    def extension(self, endpoint: str) -> str:
        return self.extensions.get(endpoint, endpoint)


def endpoint_of(channel: str) -> str:
    """`PJSIP/101-0000001a` -> `101`; `SIP/trunk/5551234` stays `trunk`; no tech -> as is."""
    _, slash, rest = channel.partition("/")
    if not slash:
        return channel
    rest = rest.split("/", 1)[0]
    head, dash, _ = rest.rpartition("-")
    return head if dash and head else rest


def local_pair_key(channel: str) -> str:
    """Both halves of a Local channel share this key: the name without `;1` / `;2`."""
    return channel.rsplit(";", 1)[0]


def dialed_number(dial_string: str) -> str:
    """The number in a DialString: `5559876@trunk`, `trunk/5559876`, `prov/sip:555@host`."""
    first = dial_string.split("&", 1)[0]
    parts = first.split("/")
    # peer/number (chan_sip) or endpoint/sip:uri (PJSIP); else number@endpoint, number@ctx/opts
    first = parts[1] if len(parts) > 1 and "@" not in parts[0] else parts[0]
    first = first.removeprefix("sip:").removeprefix("sips:").removeprefix("tel:")
    return first.split("@", 1)[0]
