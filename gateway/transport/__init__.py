"""The gRPC transport between nodes and to local clients."""
