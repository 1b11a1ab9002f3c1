"""The call tracker: a sans-IO state machine from AMI events to call records."""

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
