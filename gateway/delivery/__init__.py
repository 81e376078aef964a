"""Moving messages between nodes: the per-peer senders and the receiver."""
