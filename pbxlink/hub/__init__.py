"""The popup hub: client cards pushed to operators over a WebSocket (docs/popup-protocol.md)."""

from pbxlink.hub.server import Hub

__all__ = ["Hub"]
