"""Owns the call tracker: a sans-IO state machine from AMI events (any Mapping[str, str]) to
call records and updates. Never imports I/O, a clock or logging, nor any other part of pbxlink
(ami/ included): tests/test_structure.py checks it."""

from pbxlink.calls.record import RECORD_FIELDS, CallRecord
from pbxlink.calls.rules import ChannelRules
from pbxlink.calls.tracker import CallTracker, TrackerConfig
from pbxlink.calls.updates import (
    Answered,
    CallEnded,
    CallStarted,
    CallUpdate,
    Changed,
    RingEnded,
    Ringing,
    TooLong,
    Transferred,
)

__all__ = [
    "RECORD_FIELDS",
    "Answered",
    "CallEnded",
    "CallRecord",
    "CallStarted",
    "CallTracker",
    "CallUpdate",
    "Changed",
    "ChannelRules",
    "RingEnded",
    "Ringing",
    "TooLong",
    "TrackerConfig",
    "Transferred",
]
