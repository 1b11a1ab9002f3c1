"""Owns the Asterisk Manager Interface: framing bytes into messages, the live link (login, pings,
reconnects) and its [ami] settings (settings.py). Never imports what reads the events (calllog/,
clients/, desk/, hub/, web/), the simulator (sim/), the config loader or the daemon: they import
it."""

from pbxlink.ami.framing import AmiParser, Banner, Frame, Message, Subscription

__all__ = ["AmiParser", "Banner", "Frame", "Message", "Subscription"]
