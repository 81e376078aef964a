"""Version 1 of the wire contract. The *_pb2 modules are generated; run `make proto`."""
