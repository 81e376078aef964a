"""What the Federation servicer puts in the trailer of a batch it refuses."""

from __future__ import annotations

from guantong.v1 import federation_pb2 as fed

from gateway.transport.federation_service import (
    RESULTS_TRAILER_MAX_BYTES,
    _results_trailer,
)


def refused(count: int, reason: str) -> fed.PushResponse:
    response = fed.PushResponse()
    for number in range(count):
        response.results.add(
            message_id=f"{number:032x}",
            outcome=fed.REFUSED_BY_AGREEMENT,
            reason=reason,
            agreement_id="central-china",
            agreement_version=2,
        )
    return response


def test_results_that_fit_travel_whole():
    response = refused(3, "central-china v2 does not share level Ⅲ")

    assert fed.PushResponse.FromString(_results_trailer(response)) == response


def test_results_too_large_lose_their_reasons_then_the_last_ones():
    response = refused(1000, "x" * 200)

    trailer = _results_trailer(response)

    assert len(trailer) <= RESULTS_TRAILER_MAX_BYTES
    kept = fed.PushResponse.FromString(trailer).results
    assert 0 < len(kept) < 1000
    assert [r.message_id for r in kept] == [
        r.message_id for r in response.results[: len(kept)]
    ]
    assert all(r.reason == "" and r.agreement_version == 2 for r in kept)
