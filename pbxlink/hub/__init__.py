"""The popup hub: client cards pushed to operators over a WebSocket (docs/popup-protocol.md)."""

from pbxlink.hub.server import Hub, default_origins

__all__ = ["Hub", "default_origins"]
