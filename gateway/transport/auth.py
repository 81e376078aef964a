"""Who may call: one interceptor that admits or refuses every RPC.

``CallerAuthInterceptor`` reads the caller's identity from its verified TLS
certificate before any handler runs, and asks an ``accept`` function whether
that identity may use this server (a peer server accepts known nodes, a local
API accepts its own node's clients). A refused call never reaches its handler:

- no certificate, or one that names no valid identity: ``UNAUTHENTICATED``;
- a valid identity that ``accept`` turns down: ``PERMISSION_DENIED``, with the
  reason ``accept`` gave.

The standard health and reflection services stay open to any caller the TLS
handshake let in, so probes and tooling work without a federation identity.

An admitted call runs in a context of its own, in which the identity is
available through ``current_identity()`` and bound to the structlog context
(``peer=CN-HB``, ``client=ops-desk``). Streaming responses are produced step
by step inside that same context, so a generator handler sees the identity on
every item. Nothing leaks into the server thread after the call: the context
is dropped, not reset.

This is for the synchronous ``grpc.server``; ``grpc.aio`` needs its own
interceptor.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
import structlog

from gateway.identity.peer import PeerIdentity, identity_from_context
from node.errors import IdentityError

log = structlog.get_logger(__name__)

Accept = Callable[[PeerIdentity], str | None]
"""Returns ``None`` to admit the identity, or the reason it is refused."""

Behaviour = Callable[[Any, grpc.ServicerContext], Any]

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_current: contextvars.ContextVar[PeerIdentity] = contextvars.ContextVar(
    "guantong_caller"
)
# The attribute of a method handler for each kind of RPC, the factory that
# builds one, and whether it streams its responses.
_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def current_identity() -> PeerIdentity:
    """The caller of the RPC being handled.

    Raises ``IdentityError`` outside an admitted call, so a handler reached
    without the interceptor fails closed instead of acting for nobody.
    """
    try:
        return _current.get()
    except LookupError as exc:
        raise IdentityError("no authenticated caller in this context") from exc


class CallerAuthInterceptor(grpc.ServerInterceptor):
    """Admits a call only when its certificate names an identity ``accept``
    takes; see the module docstring."""

    def __init__(self, accept: Accept):
        self._accept = accept

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler

        for attribute, factory, streams_responses in _KINDS:
            behaviour = getattr(handler, attribute)
            if behaviour is not None:
                return factory(
                    self._guard(method, behaviour, streams_responses),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _guard(
        self, method: str, behaviour: Behaviour, streams_responses: bool
    ) -> Behaviour:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            call_context = contextvars.copy_context()
            result = call_context.run(
                self._admit_and_run, method, behaviour, request, context
            )
            if streams_responses:
                return _iterate_in(call_context, result)
            return result

        return guarded

    def _admit_and_run(
        self,
        method: str,
        behaviour: Behaviour,
        request: Any,
        context: grpc.ServicerContext,
    ) -> Any:
        identity = self._admit(method, context)
        _current.set(identity)
        structlog.contextvars.bind_contextvars(peer=identity.node_id)
        if identity.client is not None:
            structlog.contextvars.bind_contextvars(client=identity.client)
        return behaviour(request, context)

    def _admit(self, method: str, context: grpc.ServicerContext) -> PeerIdentity:
        try:
            identity = identity_from_context(context)
        except IdentityError as exc:
            _refuse(context, method, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        reason = self._accept(identity)
        if reason is not None:
            _refuse(context, method, grpc.StatusCode.PERMISSION_DENIED, reason)
        return identity


def _refuse(
    context: grpc.ServicerContext, method: str, code: grpc.StatusCode, reason: str
) -> NoReturn:
    log.info("auth.refused", method=method, code=code.name, reason=reason)
    context.abort(code, reason)  # raises; the handler is never called
    raise AssertionError("unreachable: abort raises")


def _iterate_in(
    call_context: contextvars.Context, items: Iterator[Any]
) -> Iterator[Any]:
    # Each step of the handler's generator runs in the call's context, not in
    # whatever context the server thread happens to be in; so does its
    # clean-up when the call ends early (cancelled, deadline exceeded).
    try:
        while True:
            try:
                item = call_context.run(next, items)
            except StopIteration:
                return
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            call_context.run(close)
