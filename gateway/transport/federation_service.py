"""The Federation servicer: proto in, receiver, proto out.

The caller was authenticated by CallerAuthInterceptor before this runs; its
node id is read from there, never from the request. A batch of which nothing
may be accepted is refused as a whole with PERMISSION_DENIED; the results,
with the agreement each was judged under, then travel in a binary trailer so
the sender still learns why and under which version.
"""

from __future__ import annotations

import grpc
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import federation_pb2_grpc as fed_grpc

from gateway.delivery.receiver import Outcome, Receiver, Result
from gateway.delivery.sender import (
    REFUSED_BY_AGREEMENT_KEY,
    REFUSED_BY_AGREEMENT_VALUE,
    RESULTS_KEY,
)
from gateway.transport.auth import current_identity

_OUTCOMES = {
    Outcome.ACCEPTED: fed.ACCEPTED,
    Outcome.DUPLICATE: fed.DUPLICATE,
    Outcome.REFUSED_BY_AGREEMENT: fed.REFUSED_BY_AGREEMENT,
    Outcome.REJECTED_INVALID: fed.REJECTED_INVALID,
}
MAX_BATCH = 1000
# gRPC caps all the metadata of a call (8 KiB by default): a refused batch's
# results go in the trailer as far as they fit in this, without their reasons
# when need be; a result left out settles on the status details alone.
RESULTS_TRAILER_MAX_BYTES = 4096


class FederationService(fed_grpc.FederationServicer):
    def __init__(self, receiver: Receiver):
        self.receiver = receiver

    def Push(
        self, request: fed.PushRequest, context: grpc.ServicerContext
    ) -> fed.PushResponse:
        sender = current_identity().node_id
        if len(request.envelopes) > MAX_BATCH:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a batch holds at most {MAX_BATCH} envelopes",
            )
        results = self.receiver.push(sender, list(request.envelopes))

        response = fed.PushResponse(results=[_result(r) for r in results])
        refused = [r for r in results if r.outcome is Outcome.REFUSED_BY_AGREEMENT]
        taken = [
            r for r in results if r.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)
        ]
        if refused and not taken:
            context.set_trailing_metadata(
                (
                    (REFUSED_BY_AGREEMENT_KEY, REFUSED_BY_AGREEMENT_VALUE),
                    (RESULTS_KEY, _results_trailer(response)),
                )
            )
            context.abort(grpc.StatusCode.PERMISSION_DENIED, refused[0].reason)
        return response


def _results_trailer(response: fed.PushResponse) -> bytes:
    full = response.SerializeToString()
    if len(full) <= RESULTS_TRAILER_MAX_BYTES:
        return full
    brief = fed.PushResponse()
    for result in response.results:
        added = brief.results.add()
        added.CopyFrom(result)
        added.ClearField("reason")
        if brief.ByteSize() > RESULTS_TRAILER_MAX_BYTES:
            del brief.results[-1]
            break
    return brief.SerializeToString()


def _result(result: Result) -> fed.DeliveryResult:
    message = fed.DeliveryResult(
        message_id=result.message_id,
        outcome=_OUTCOMES[result.outcome],
        reason=result.reason,
        withheld_by_receiver=result.withheld_by_receiver,
    )
    if result.agreement is not None:
        message.agreement_id = result.agreement.agreement_id
        message.agreement_version = result.agreement.own_version
    return message
