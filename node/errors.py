"""The one exception root of Guantong and the few subclasses that carry data.

Servicers translate these into gRPC status codes at their boundary; nothing
below them knows about gRPC.
"""

from __future__ import annotations


class GuantongError(Exception):
    """Root of every error Guantong raises on purpose."""


class ConfigError(GuantongError):
    """A configuration or agreement file is malformed.

    ``problems`` lists every problem found, each naming the file, line and key.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InvalidRecord(GuantongError):
    """A record failed validation; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class IdentityError(GuantongError):
    """A caller's certificate does not name a node or client we accept."""


class PolicyDenied(GuantongError):
    """No agreement allows a message from ``sender`` to ``receiver``."""

    def __init__(self, sender: str, receiver: str, reason: str):
        self.sender = sender
        self.receiver = receiver
        self.reason = reason
        super().__init__(f"{sender} -> {receiver}: {reason}")


class ConflictingDuplicate(GuantongError):
    """A message id already held with different bytes."""

    def __init__(self, origin: str, message_id: str):
        self.origin = origin
        self.message_id = message_id
        super().__init__(
            f"message {origin}/{message_id} already held with different content"
        )
