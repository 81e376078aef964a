"""The Admin servicer: a node's operators reload agreements, ask what they
do, and re-queue a peer.

Thin by design: convert the proto, call the policy holder, ``node.explain``,
``node.mismatches`` or ``node.storage.admin``, convert back. Status codes
are chosen here and only here.

It is served on the local API server, so it admits the callers Local admits:
anyone on loopback, and off loopback any client certificate issued for this
node's clients. Known gap (issue 4): there is no admin role yet, so a desk
application's certificate can reload agreements and re-queue a peer as well
as an operator's can; a client-name or role check belongs in the local
server's ``accept`` function once certificates carry roles.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import grpc
import structlog
from guantong.v1 import admin_pb2 as api
from guantong.v1 import admin_pb2_grpc as admin_grpc

from gateway.policy import PolicyHolder, PolicySet
from gateway.policy.outcome import SampleRecord
from node.clock import Clock
from node.errors import InvalidRecord
from node.explain import (
    NodeOutcome,
    NotPublishedHere,
    history_decisions,
    outcomes,
    published_sample,
    sample_of,
)
from node.mismatches import Mismatch, find_mismatches
from node.records import timestamp, validate
from node.storage import Store
from node.storage.admin import requeue_peer

log = structlog.get_logger(__name__)


class AdminService(admin_grpc.AdminServicer):
    def __init__(
        self,
        node_id: str,
        policies: PolicyHolder,
        store: Store,
        peers: Callable[[], Collection[str]],
        wake: Callable[[Collection[str]], None],
        clock: Clock,
    ):
        self.node_id = node_id
        self.policies = policies
        self.store = store
        self.peers = peers
        self.wake = wake
        self.clock = clock

    def ReloadPolicies(
        self, request: api.ReloadPoliciesRequest, context: grpc.ServicerContext
    ) -> api.ReloadPoliciesResponse:
        # The holder logs policy.loaded or policy.reload_refused with every problem.
        result = self.policies.reload()
        return api.ReloadPoliciesResponse(
            ok=result.ok,
            at=timestamp(result.at),
            agreements=_agreements(self.policies.current),
            problems=result.problems,
            warnings=result.warnings,
        )

    def PolicyStatus(
        self, request: api.PolicyStatusRequest, context: grpc.ServicerContext
    ) -> api.PolicyStatusResponse:
        policy_set = self.policies.current
        response = api.PolicyStatusResponse(
            node=self.node_id,
            agreements=_agreements(policy_set),
            loaded_at=timestamp(self.policies.loaded_at),
            warnings=policy_set.warnings,
            mismatches=[_mismatch(m) for m in find_mismatches(self.store, policy_set)],
        )
        refused = self.policies.last_error
        if refused is not None:
            response.last_refused.at.CopyFrom(timestamp(refused.at))
            response.last_refused.problems.extend(refused.problems)
        return response

    def Explain(
        self, request: api.ExplainRequest, context: grpc.ServicerContext
    ) -> api.ExplainResponse:
        what = request.WhichOneof("what")
        response = api.ExplainResponse()
        policy_set = self.policies.current
        now = self.clock.now()
        decisions = None
        if what == "ref":
            try:
                sample, entry = published_sample(self.store, self.node_id, request.ref)
            except NotPublishedHere as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            response.subject_id = entry.subject_id
            response.subject_version = entry.subject_version
            decisions = history_decisions(self.store, sample, entry, policy_set, now)
        elif what == "record":
            try:
                validate(request.record)
            except InvalidRecord as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            sample = sample_of(self.store, self.node_id, "", request.record)
        else:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ref or record: give one")

        results = outcomes(sample, policy_set, now, set(self.peers()), decisions)
        _fill_explanation(response, sample, policy_set, results)
        response.at.CopyFrom(timestamp(now))
        return response

    def Resend(
        self, request: api.ResendRequest, context: grpc.ServicerContext
    ) -> api.ResendResponse:
        if request.peer not in set(self.peers()):
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"peer: {request.peer!r} is not a peer of {self.node_id}",
            )
        requeued = requeue_peer(self.store, request.peer)
        log.info("peer.resend_requested", peer=request.peer, requeued=requeued)
        self.wake([request.peer])
        return api.ResendResponse(peer=request.peer, requeued=requeued)


def _agreements(policy_set: PolicySet) -> list[api.AgreementInForce]:
    return [
        api.AgreementInForce(id=a.id, version=a.version, title=a.title, source=a.source)
        for a in policy_set.agreements
    ]


def _mismatch(mismatch: Mismatch) -> api.VersionMismatch:
    message = api.VersionMismatch(
        peer=mismatch.peer,
        agreement_id=mismatch.agreement_id,
        ours=mismatch.ours,
        theirs=mismatch.theirs,
        seen_as=mismatch.seen_as,
        messages=mismatch.messages,
        refused=mismatch.refused,
        withheld_fields=mismatch.withheld_fields,
    )
    if mismatch.last_at is not None:
        message.last_at.CopyFrom(timestamp(mismatch.last_at))
    return message


def _fill_explanation(
    response: api.ExplainResponse,
    sample: SampleRecord,
    policy_set: PolicySet,
    results: list[NodeOutcome],
) -> None:
    facts = sample.facts
    response.sender = sample.sender
    response.kind = facts.kind
    response.category = facts.category or ""
    response.level = facts.level or 0
    response.exercise = facts.exercise
    response.views = facts.views
    response.reposts = facts.reposts
    response.addressed_to.extend(facts.addressed_to)
    response.incident_known = sample.incident_known
    for result in results:
        decision = result.decision
        # A holder of an earlier version may be a node the agreements no
        # longer list; it is still named, without names.
        node = policy_set.nodes.get(decision.receiver)
        response.nodes.add(
            node=decision.receiver,
            name_zh=node.name_zh if node is not None else "",
            name_en=node.name_en if node is not None else "",
            receives=result.receives,
            allowed=decision.allowed,
            agreement_id=decision.agreement_id or "",
            agreement_version=decision.agreement_version or 0,
            rule=result.rule,
            reason=result.reason,
            withheld_fields=decision.withheld_fields,
            no_further_sharing=decision.no_further_sharing,
        )
