"""pbxlink's framing plugged into panoramisk's Manager, over a real TCP socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol

from pbxlink.ami.protocol import FramedAMIProtocol

GEORGIAN = "ნინო ბერიძე"


def newchannel(name: str) -> bytes:
    return (
        "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-00000001\r\n"
        f"CallerIDNum: +995599123456\r\nCallerIDName: {name}\r\n"
        "ChanVariable: FROM_DID=995322000102\r\nChanVariable: SIPURI=sip:x@y\r\n"
        "Uniqueid: 1795472248.0\r\nLinkedid: 1795472248.0\r\n\r\n"
    ).encode()


async def fake_asterisk(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: list[bytes]
) -> None:
    """Speaks just enough AMI: banner, a Login answer, then the given bytes, read by read."""
    writer.write(b"Asterisk Call Manager/11.0.0\r\n")
    await writer.drain()
    login = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    action_id = next(
        line.split(b": ", 1)[1] for line in login.split(b"\r\n") if line.startswith(b"ActionID")
    )
    writer.write(
        b"Response: Success\r\nActionID: "
        + action_id
        + b"\r\nMessage: Authentication accepted\r\n\r\n"
    )
    writer.write(
        b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 5\r\nStatus: Fully Booted\r\n\r\n"
    )
    await writer.drain()
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.02)  # separate TCP reads on the client side
    await asyncio.sleep(0.2)
    writer.close()


async def receive_newchannel(protocol: type[AMIProtocol]) -> dict:
    data = newchannel(GEORGIAN)
    cut = data.index(GEORGIAN.encode()) + 4  # inside the second character's 3 UTF-8 bytes
    chunks = [data[:cut], data[cut:]]
    server = await asyncio.start_server(lambda r, w: fake_asterisk(r, w, chunks), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
    manager = Manager(
        host="127.0.0.1",
        port=port,
        username="pbxlink",
        secret="s3cret",
        protocol_factory=protocol,
        ping_delay=60,
        reconnect_timeout=60,
    )

    def on_event(_manager: Manager, event: dict) -> None:
        if not got.done():
            got.set_result(dict(event.items()))

    manager.register_event("Newchannel", on_event)
    async with server:
        await manager.connect()
        try:
            return await asyncio.wait_for(got, 5)
        finally:
            manager.close()


def test_utf8_name_split_across_reads_arrives_whole() -> None:
    event = asyncio.run(receive_newchannel(FramedAMIProtocol))
    assert event["CallerIDName"] == GEORGIAN
    assert event["ChanVariable"] == ["FROM_DID=995322000102", "SIPURI=sip:x@y"]


def test_stock_panoramisk_corrupts_the_same_stream() -> None:
    """Why the framing exists: panoramisk 1.4 decodes each read alone and drops the bytes."""
    event = asyncio.run(receive_newchannel(AMIProtocol))
    assert event["CallerIDName"] != GEORGIAN


def test_pbxlink_sink_gets_events_without_conversion() -> None:
    async def run() -> list:
        received: list = []
        data = newchannel("Олег Коваленко")
        server = await asyncio.start_server(
            lambda r, w: fake_asterisk(r, w, [data[i : i + 5] for i in range(0, len(data), 5)]),
            "127.0.0.1",
            0,
        )
        manager = Manager(
            host="127.0.0.1",
            port=server.sockets[0].getsockname()[1],
            username="u",
            secret="s",
            protocol_factory=FramedAMIProtocol,
            ping_delay=60,
            reconnect_timeout=60,
        )
        manager.pbxlink_subscription = {"Newchannel": None}
        manager.pbxlink_sink = received.append
        async with server:
            await manager.connect()
            for _ in range(100):
                if received:
                    break
                await asyncio.sleep(0.05)
            manager.close()
        return received

    received = asyncio.run(run())
    assert [m.event for m in received] == ["Newchannel"]  # FullyBooted was not subscribed
    assert received[0]["CallerIDName"] == "Олег Коваленко"
    assert received[0].getall("ChanVariable")[1] == "SIPURI=sip:x@y"


@pytest.mark.parametrize(
    "patterns, expected", [(["Newchannel", "Hangup"], {"Newchannel", "Hangup"}), (["Dial*"], None)]
)
def test_subscription_follows_registered_patterns(
    patterns: list[str], expected: set | None
) -> None:
    from pbxlink.ami.protocol import subscription_of

    manager = Manager()
    for p in patterns:
        manager.register_event(p, lambda *_: None)
    sub = subscription_of(manager)
    if expected is None:
        assert sub is None
    else:
        assert set(sub) == expected | {"FullyBooted"}


def test_list_items_of_our_own_raw_actions_reach_the_sink() -> None:
    """CoreShowChannel items carry the ActionID of an action panoramisk is not awaiting:
    they must reach the sink, in stream order, like events."""
    from pbxlink.ami.framing import AmiParser

    protocol = FramedAMIProtocol()
    received: list = []

    wanted = {"CoreShowChannel": None, "CoreShowChannelsComplete": None}
    protocol.factory = SimpleNamespace(
        patterns=[], pbxlink_subscription=wanted, pbxlink_sink=received.append
    )
    protocol.responses = {}
    protocol.parser = AmiParser(wanted)
    protocol._patterns_seen = 0
    protocol.data_received(
        b"Response: Success\r\nActionID: pbxlink-resync-1\r\nEventList: start\r\n\r\n"
        b"Event: CoreShowChannel\r\nActionID: pbxlink-resync-1\r\nUniqueid: 1.1\r\n\r\n"
        b"Event: CoreShowChannelsComplete\r\nActionID: pbxlink-resync-1\r\nListItems: 1\r\n\r\n"
    )
    assert [m["Event"] for m in received] == ["CoreShowChannel", "CoreShowChannelsComplete"]
