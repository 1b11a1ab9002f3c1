"""Owns who the operators are: the `Operator` value (also the declaration of an [[operators]]
table), token hashing, and the one registry (by token hash, replaced whole on a reload, with
change listeners) that web auth, the hub's hello and the desk all read. Never imports another
part of pbxlink, nor anything that does I/O."""

from pbxlink.operators.model import ROLES, TOKEN_PREFIX, Operator, Role, hash_token
from pbxlink.operators.registry import Operators

__all__ = ["ROLES", "TOKEN_PREFIX", "Operator", "Operators", "Role", "hash_token"]
