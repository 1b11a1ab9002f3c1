"""The [ami] section: where the Asterisk Manager Interface is and how the link keeps it alive.

One declaration per key (`pbxlink.settings` says how); the loader checks each value against
it and resolves `secret_env` and `secret_file` into `secret`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pbxlink.settings import CredentialFile, Port, Positive, Section, Text


class AmiConfig(Section):
    mode: Literal["asterisk", "simulator"] = "simulator"
    host: Text = "127.0.0.1"
    port: Port = 5038
    username: Text = "pbxlink"
    #: give one of the three; the loader puts what secret_env or secret_file names in `secret`
    secret: str | None = None
    secret_env: Text | None = None
    secret_file: CredentialFile | None = None
    tls: bool = False
    tls_ca_file: CredentialFile | None = None
    tls_verify: bool = True
    ping_interval_s: Positive = 10.0
    ping_timeout_s: Positive = 5.0
    connect_timeout_s: Positive = 5.0
    reconnect_min_s: Positive = 0.5
    reconnect_max_s: Positive = 30.0

    def __repr__(self) -> str:
        """Every field but the secret, which must never reach a log or a traceback."""
        shown = msgspec.structs.asdict(self) | {"secret": "***" if self.secret else None}
        return "AmiConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"
