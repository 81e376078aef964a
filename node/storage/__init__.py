"""The node's storage: the append-only log, the outbox and the peers' state."""

from node.storage.store import Store, content_digest

__all__ = ["Store", "content_digest"]
