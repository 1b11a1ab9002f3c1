"""AmiParser on the things real streams do."""

from __future__ import annotations

from types import SimpleNamespace

import structlog

from pbxlink.ami.framing import AmiParser, Banner, Message
from pbxlink.ami.link import AmiLink
from pbxlink.ami.protocol import FramedAMIProtocol

EVENT = (
    b"Event: Newchannel\r\nChannel: PJSIP/trunk-00000001\r\n"
    b"CallerIDName: \xe1\x83\x9c\xe1\x83\x98\xe1\x83\x9c\xe1\x83\x9d\r\n"
    b"Uniqueid: 1.1\r\n\r\n"
)


def feed_all(parser: AmiParser, data: bytes, size: int) -> list:
    out: list = []
    for i in range(0, len(data), size):
        out += parser.feed(data[i : i + size])
    return out


def test_banner_then_messages_without_blank_line_after_banner() -> None:
    out = AmiParser().feed(
        b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: 1\r\n\r\n"
    )
    assert out[0] == Banner("11.0.0")
    assert out[1] == {"Response": "Success", "ActionID": "1"}


def test_split_anywhere_even_inside_a_utf8_character() -> None:
    for size in range(1, len(EVENT) + 1):
        out = feed_all(AmiParser(), EVENT, size)
        assert len(out) == 1, size
        assert out[0]["CallerIDName"] == "ნინო"


def test_bare_lf_crlf_and_mixed_line_ends() -> None:
    lf = EVENT.replace(b"\r\n", b"\n")
    mixed = b"Event: Hangup\nUniqueid: 2.2\r\nCause: 16\n\r\n"
    out = feed_all(AmiParser(), lf + mixed + EVENT, 3)
    assert [m["Event"] for m in out] == ["Newchannel", "Hangup", "Newchannel"]
    assert out[1] == {"Event": "Hangup", "Uniqueid": "2.2", "Cause": "16"}


def test_repeated_keys_keep_every_value() -> None:
    data = b"Event: X\r\nChanVariable: A=1\r\nChanVariable: B=2\r\nChanVariable: C=\r\n\r\n"
    (msg,) = AmiParser().feed(data)
    assert msg["ChanVariable"] == "A=1"
    assert msg.getall("ChanVariable") == ["A=1", "B=2", "C="]
    assert msg.getall("Missing") == []


def test_empty_values_and_keys_without_space() -> None:
    (msg,) = AmiParser().feed(b"Event: X\r\nAccountCode: \r\nUserField:\r\n\r\n")
    assert msg["AccountCode"] == "" and msg["UserField"] == ""


def test_response_follows_body_with_blank_lines() -> None:
    data = (
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n"
        b"Channel              Location\r\n\r\nPJSIP/101-0001       s@default\r\n"
        b"--END COMMAND--\r\n\r\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n"
    )
    for size in (1, 5, len(data)):
        out = feed_all(AmiParser(), data, size)
        assert out[0]["Response"] == "Follows" and out[0]["ActionID"] == "7"
        assert "PJSIP/101-0001" in out[0].body and out[0].body.endswith("--END COMMAND--")
        assert out[1]["Event"] == "Hangup"


def test_invalid_utf8_is_replaced_and_counted_not_logged() -> None:
    bad = b"Event: Newchannel\r\nCallerIDName: Caf\xe9\r\n\r\n"
    parser = AmiParser()
    with structlog.testing.capture_logs() as logs:
        out = parser.feed(bad + bad)
    assert [m["CallerIDName"] for m in out] == ["Caf\ufffd", "Caf\ufffd"]
    assert parser.anomalies == {"invalid_utf8": 2}
    assert logs == []  # the framing is pure: the adapter logs (test_the_link_logs_...)


def test_absurdly_long_line_is_skipped_with_the_rest_kept() -> None:
    data = b"Event: X\r\nJunk: " + b"x" * 5000 + b"\r\nUniqueid: 1.1\r\n\r\n" + EVENT
    parser = AmiParser(max_line=1000)
    out = feed_all(parser, data, 512)
    assert out[0] == {"Event": "X", "Uniqueid": "1.1"}
    assert out[1]["Event"] == "Newchannel"
    assert parser.anomalies == {"line_too_long": 1}


def test_message_that_never_ends_is_bounded_and_dropped() -> None:
    parser = AmiParser(max_message=10_000)
    out: list = []
    out += parser.feed(b"Event: Flood\r\nData: ")
    for _ in range(100):
        out += parser.feed(b"y" * 1000)
        assert len(parser._buf) <= 11_000
    out += parser.feed(b"\r\n\r\n" + EVENT)
    assert [m["Event"] for m in out] == ["Newchannel"]
    assert parser.anomalies == {"message_too_long": 1}


class _Transport:
    def write(self, data: bytes) -> None:
        pass


def test_the_link_logs_what_the_framing_counted() -> None:
    """The adapter's side: FramedAMIProtocol hands each read's new anomalies to the link,
    which logs them (invalid UTF-8 once a session, the others each time they happen)."""
    where = SimpleNamespace(tls=False, host="pbx", port=5038, username="pbxlink")
    link = AmiLink(
        where,  # type: ignore[arg-type]
        subscription={},
        on_event=lambda msg, at: None,
        on_up=lambda at: None,
        on_down=lambda at: None,
    )
    factory = SimpleNamespace(
        pbxlink_sink=lambda msg: None,
        pbxlink_anomalies=link._anomalies,
        patterns=[("Newchannel", None), ("X", None)],
    )
    protocol = FramedAMIProtocol()
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    protocol.factory = factory
    bad = b"Event: Newchannel\r\nCallerIDName: Caf\xe9\r\n\r\n"
    long_line = b"Event: X\r\nJunk: " + b"x" * 70_000 + b"\r\n\r\n"
    with structlog.testing.capture_logs() as logs:
        protocol.data_received(bad + bad)
        protocol.data_received(bad + long_line)
        protocol.data_received(EVENT)
    told = [(e["event"], e["count"], e["session_total"]) for e in logs]
    assert told == [("ami.invalid_utf8", 2, 2), ("ami.line_too_long", 1, 1)]


def test_subscription_skips_unwanted_and_delivers_wanted_whole() -> None:
    varset = b"Event: VarSet\r\nUniqueid: 1.1\r\nVariable: %s\r\nValue: v\r\n\r\n"
    data = (
        varset % b"RTPAUDIOQOS"
        + varset % b"MIXMONITOR_FILENAME"
        + b"Event: CEL\r\nEventName: CHAN_START\r\n\r\n"
        + EVENT
        + b"Response: Success\r\nActionID: 3\r\n\r\n"
    )
    parser = AmiParser({"VarSet": [b"\nVariable: MIXMONITOR_FILENAME\n"], "Newchannel": None})
    out = feed_all(parser, data, 7)
    assert [(m.get("Event"), m.get("Variable")) for m in out] == [
        ("VarSet", "MIXMONITOR_FILENAME"),
        ("Newchannel", None),
        (None, None),
    ]
    assert out[1] == feed_all(AmiParser(), EVENT, 100)[0]
    assert out[2]["Response"] == "Success"
    assert parser.skipped_events == 2


def test_garbage_between_messages_does_not_disturb_them() -> None:
    garbage = b"\x00\xff\xfe garbage without a colon\r\n\xc3\x28\r\n\r\n\r\n\r\n"
    out = feed_all(AmiParser(), garbage + EVENT + garbage + EVENT, 11)
    assert [m.get("Event") for m in out if isinstance(m, Message) and "Event" in m] == [
        "Newchannel",
        "Newchannel",
    ]
    assert all(not isinstance(m, Message) or "Event" in m or m == {} for m in out)
