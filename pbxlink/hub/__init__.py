"""Owns the popup WebSocket (docs/popup-protocol.md): the operators' sockets, their hello and
heartbeats, carrying the desk's messages; and its [hub] settings (settings.py). Never imports
web/ (it serves /api/hub, not the hub), ami/, calllog/, clients/, the config loader or the
daemon."""

from pbxlink.hub.server import Hub

__all__ = ["Hub"]
