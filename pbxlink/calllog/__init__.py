"""The call log: ended calls in SQLite, written by group commit off the AMI read path."""

from pbxlink.calllog.schema import SchemaError
from pbxlink.calllog.store import CallLogStore

__all__ = ["CallLogStore", "SchemaError"]
