"""pbxlink: a CTI daemon that makes an Asterisk PBX useful to a call centre."""

__version__ = "0.1.0"
