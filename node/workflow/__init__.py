"""The bureaus' workflows on top of the exchange.

- :mod:`.requests`: the joint-handling request's state machine (协作处置),
  pure code: who may do what from which state.
- :mod:`.deadlines`: a request's deadline (速报 time limits) and the checker
  that flags overdue requests and escalates them (提级).
- :mod:`.appliers`: how requests, their updates, notices, acknowledgements and
  escalations change this node's workflow tables, in the transaction of the
  log row that carries them.
- :mod:`.service`: the operations staff run through the local API.
"""
