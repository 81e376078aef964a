"""The Federation servicer: proto in, receiver, proto out.

The caller was authenticated by CallerAuthInterceptor before this runs; its
node id is read from there, never from the request.
"""

from __future__ import annotations

import grpc
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import federation_pb2_grpc as fed_grpc

from gateway.delivery.receiver import Outcome, Receiver
from gateway.delivery.sender import REFUSED_BY_AGREEMENT_KEY, REFUSED_BY_AGREEMENT_VALUE
from gateway.transport.auth import current_identity

_OUTCOMES = {
    Outcome.ACCEPTED: fed.ACCEPTED,
    Outcome.DUPLICATE: fed.DUPLICATE,
    Outcome.REFUSED_BY_AGREEMENT: fed.REFUSED_BY_AGREEMENT,
    Outcome.REJECTED_INVALID: fed.REJECTED_INVALID,
}
MAX_BATCH = 1000


class FederationService(fed_grpc.FederationServicer):
    def __init__(self, receiver: Receiver):
        self.receiver = receiver

    def Push(self, request: fed.PushRequest, context: grpc.ServicerContext) -> fed.PushResponse:
        sender = current_identity().node_id
        if len(request.envelopes) > MAX_BATCH:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"a batch holds at most {MAX_BATCH} envelopes"
            )
        results = self.receiver.push(sender, list(request.envelopes))

        refused = [r for r in results if r.outcome is Outcome.REFUSED_BY_AGREEMENT]
        taken = [r for r in results if r.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)]
        if refused and not taken:
            context.set_trailing_metadata(
                ((REFUSED_BY_AGREEMENT_KEY, REFUSED_BY_AGREEMENT_VALUE),)
            )
            context.abort(grpc.StatusCode.PERMISSION_DENIED, refused[0].reason)

        return fed.PushResponse(
            results=[
                fed.DeliveryResult(
                    message_id=r.message_id, outcome=_OUTCOMES[r.outcome], reason=r.reason
                )
                for r in results
            ]
        )
