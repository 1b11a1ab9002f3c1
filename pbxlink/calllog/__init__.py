"""Owns the call log's tables (calls, call_extensions, open_calls, recording_access): nothing else
writes them; and the [thresholds] and [retention] settings (settings.py). Never imports the
client directory (clients/), the hub, the web or the daemon."""

from pbxlink.calllog.links import relink_calls
from pbxlink.calllog.store import CallLogStore
from pbxlink.db import SchemaError

__all__ = ["CallLogStore", "SchemaError", "relink_calls"]
