"""Everything that speaks the Asterisk Manager Interface."""

from pbxlink.ami.framing import AmiParser, Banner, Frame, Message, Subscription

__all__ = ["AmiParser", "Banner", "Frame", "Message", "Subscription"]
