"""One peer's sender: its outbox rows, in order, one batch in flight.

Each peer has its own sender, so a slow or unreachable peer stalls nobody
else. A sender takes the oldest pending rows for its peer, pushes them as one
batch and settles each row from the peer's per-message answer: accepted or
duplicate rows are delivered; refused or invalid ones become dead letters and
are never retried round and round.

Failures are retried at two levels. A failed push is retried a few times at
once (tenacity), for the blips of a busy network. When those are spent the
peer enters backoff: the failure count and the time of the next attempt are
written to the database, so a restarted node resumes the backoff instead of
hammering a peer that is down. The backoff doubles up to a ceiling, with
jitter, and ends at the first push that gets through. Only transport failures
back off; a peer refusing a batch under its agreements is an answer, not a
failure.

Every answer names the peer's version of the agreement the message was sent
under, and the fields its copy withheld beyond ours; both are kept on the
outbox row (``node.mismatches`` reads them), and a version other than the
one the message was sent under is logged as ``policy.version_mismatch``. The
stricter copy has already won at the peer: what it refused is a dead letter,
what it withheld it did not store.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import federation_pb2_grpc as fed_grpc
from guantong.v1 import records_pb2 as pb
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from node.clock import Clock
from node.config import DeliveryConfig
from node.storage import Store
from node.storage.schema import DEAD_LETTER, DELIVERED
from node.storage.types import OutboxItem, PeerAnswer, PeerBackoff

log = structlog.get_logger(__name__)

# Trailing metadata a receiver sets when it refuses a whole batch under its
# agreements (as opposed to refusing the caller's identity).
REFUSED_BY_AGREEMENT_KEY = "guantong-refused"
REFUSED_BY_AGREEMENT_VALUE = "agreement"
# ... and the per-envelope results of that batch: a serialized PushResponse.
RESULTS_KEY = "guantong-results-bin"

_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
}

ChannelFactory = Callable[[str, str], grpc.Channel]


class StepKind(Enum):
    IDLE = "idle"
    DELIVERED = "delivered"
    FAILED = "failed"
    BACKING_OFF = "backing_off"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    # How long the loop may sleep before the next step.
    wait_s: float = 0.0
    settled: int = 0


class PeerSender:
    def __init__(
        self,
        peer: str,
        store: Store,
        address_of: Callable[[str], str | None],
        channel_factory: ChannelFactory,
        config: DeliveryConfig,
        clock: Clock,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], None] | None = None,
    ):
        self.peer = peer
        self.store = store
        self.address_of = address_of
        self.channel_factory = channel_factory
        self.config = config
        self.clock = clock
        self.rand = rand
        self._sleep = sleep
        self._channel: grpc.Channel | None = None
        self._channel_address: str | None = None
        self._log = log.bind(peer=peer)

    # --- one step -----------------------------------------------------------

    def step(self) -> Step:
        """Push at most one batch; never raises for a peer's failure."""
        backoff = self.store.backoff(self.peer)
        now = self.clock.now()
        if backoff.next_attempt_at is not None and now < backoff.next_attempt_at:
            remaining = (backoff.next_attempt_at - now).total_seconds()
            return Step(StepKind.BACKING_OFF, wait_s=remaining)

        batch = self.store.pending_for(self.peer, self.config.batch_size)
        if not batch:
            return Step(StepKind.IDLE, wait_s=self.config.idle_poll_ms / 1000)

        try:
            response = self._push_with_quick_retries(batch)
        except grpc.RpcError as error:
            if _refused_by_agreement(error):
                return self._settle_all_refused(batch, error)
            return self._back_off(backoff, error)

        settled = self._settle(batch, response)
        self._log.info("peer.batch_delivered", messages=settled)
        if backoff.failed_attempts:
            self._log.info("peer.backoff_ended", after_attempts=backoff.failed_attempts)
        return Step(StepKind.DELIVERED, settled=settled)

    def _push_with_quick_retries(self, batch: list[OutboxItem]) -> fed.PushResponse:
        request = fed.PushRequest(envelopes=[_envelope(item) for item in batch])
        # Tenacity's own sleep unless one was injected.
        sleep: dict[str, Any] = {"sleep": self._sleep} if self._sleep else {}
        retrying = Retrying(
            stop=stop_after_attempt(self.config.quick_retries),
            wait=wait_fixed(self.config.quick_retry_wait_ms / 1000),
            retry=retry_if_exception(_is_transient),
            reraise=True,
            **sleep,
        )
        for attempt in retrying:
            with attempt:
                stub = fed_grpc.FederationStub(self._channel_for_peer())
                return stub.Push(request, timeout=self.config.push_timeout_s)
        raise AssertionError("unreachable: tenacity reraises")

    def _settle(self, batch: list[OutboxItem], response: fed.PushResponse) -> int:
        """Settle each row the peer answered; how many were settled."""
        by_id = {result.message_id: result for result in response.results}
        settled: list[tuple[int, str, str]] = []
        answers: dict[int, PeerAnswer] = {}
        mismatches = _Mismatches()
        for item in batch:
            envelope = _envelope(item)
            result = by_id.get(envelope.message_id)
            if result is None:
                continue  # not answered: stays pending, goes again

            outcome = fed.DeliveryOutcome.Name(result.outcome)
            if result.outcome in (fed.ACCEPTED, fed.DUPLICATE):
                settled.append((item.id, DELIVERED, outcome))
            else:
                self._log.warning(
                    "peer.message_refused",
                    message_id=envelope.message_id,
                    outcome=outcome,
                    reason=result.reason,
                )
                settled.append((item.id, DEAD_LETTER, f"{outcome}: {result.reason}"))

            # A peer that says nothing of the agreement (an older node) leaves
            # the row without an answer.
            if result.agreement_id:
                answers[item.id] = PeerAnswer(
                    result.agreement_id,
                    result.agreement_version,
                    tuple(result.withheld_by_receiver),
                )
                mismatches.add(envelope, result)

        self.store.settle(self.peer, settled, self.clock.now(), answers)
        mismatches.log(self._log)
        return len(settled)

    def _settle_all_refused(
        self, batch: list[OutboxItem], error: grpc.RpcError
    ) -> Step:
        """The peer refused the whole batch: every row is a dead letter, with
        the peer's own result where its trailer carries one."""
        self._log.warning(
            "peer.batch_refused", messages=len(batch), reason=error.details()
        )
        answered = {r.message_id: r for r in _trailer_results(error)}
        response = fed.PushResponse()
        for item in batch:
            message_id = _envelope(item).message_id
            if message_id in answered:
                response.results.append(answered[message_id])
            else:
                response.results.add(
                    message_id=message_id,
                    outcome=fed.REFUSED_BY_AGREEMENT,
                    reason=error.details(),
                )
        return Step(StepKind.DELIVERED, settled=self._settle(batch, response))

    def _back_off(self, backoff: PeerBackoff, error: grpc.RpcError) -> Step:
        attempts = backoff.failed_attempts + 1
        delay_s = min(
            self.config.max_backoff_s,
            self.config.initial_backoff_ms / 1000 * 2 ** (attempts - 1),
        )
        delay_s *= (
            0.5 + self.rand() / 2
        )  # jitter, so peers that fail together retry apart
        next_attempt_at = self.clock.now() + timedelta(seconds=delay_s)
        reason = f"{error.code().name}: {error.details()}"
        self.store.save_backoff(
            PeerBackoff(self.peer, attempts, next_attempt_at, reason)
        )
        event = "peer.backoff_started" if attempts == 1 else "peer.backoff_extended"
        self._log.warning(
            event, attempts=attempts, retry_in_s=round(delay_s, 3), error=reason
        )
        self._drop_channel()
        return Step(StepKind.FAILED, wait_s=delay_s)

    # --- the loop -----------------------------------------------------------

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Step until ``stop``; ``wake`` cuts an idle or backoff wait short."""
        self._log.info("peer.sender_started")
        try:
            while not stop.is_set():
                try:
                    step = self.step()
                except Exception:
                    self._log.exception("peer.sender_crashed_step")
                    step = Step(StepKind.FAILED, wait_s=1.0)
                if step.kind is StepKind.DELIVERED:
                    continue
                wake.wait(step.wait_s)
                wake.clear()
        finally:
            self._drop_channel()
            self._log.info("peer.sender_stopped")

    def _channel_for_peer(self) -> grpc.Channel:
        address = self.address_of(self.peer)
        if address is None:
            raise _NoAddress(self.peer)
        if self._channel is None or address != self._channel_address:
            self._drop_channel()
            self._channel = self.channel_factory(address, self.peer)
            self._channel_address = address
        return self._channel

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._channel_address = None


class _NoAddress(grpc.RpcError):
    """No address is configured for the peer: a transport failure like any other."""

    def __init__(self, peer: str):
        self.peer = peer
        super().__init__(f"no address configured for {peer}")

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return f"no address configured for {self.peer}"


def _envelope(item: OutboxItem) -> pb.Envelope:
    envelope = pb.Envelope()
    envelope.ParseFromString(item.envelope)
    return envelope


class _Mismatches:
    """Answers naming another version than a message was sent under, to be
    logged once per agreement and pair of versions for a batch."""

    def __init__(self) -> None:
        self._messages: dict[tuple[str, int, int], int] = defaultdict(int)
        self._refused: dict[tuple[str, int, int], int] = defaultdict(int)
        self._withheld: dict[tuple[str, int, int], set[str]] = defaultdict(set)

    def add(self, envelope: pb.Envelope, result: fed.DeliveryResult) -> None:
        if result.agreement_id != envelope.agreement_id:
            return
        if result.agreement_version == envelope.agreement_version:
            return
        sent_under = envelope.agreement_version
        key = (envelope.agreement_id, sent_under, result.agreement_version)
        self._messages[key] += 1
        if result.outcome not in (fed.ACCEPTED, fed.DUPLICATE):
            self._refused[key] += 1
        self._withheld[key].update(result.withheld_by_receiver)

    def log(self, logger: structlog.stdlib.BoundLogger) -> None:
        for key, messages in sorted(self._messages.items()):
            agreement, ours, theirs = key
            logger.warning(
                "policy.version_mismatch",
                agreement=agreement,
                ours=ours,
                theirs=theirs,
                messages=messages,
                refused=self._refused[key],
                withheld=sorted(self._withheld[key]),
            )


def _trailer_results(error: grpc.RpcError) -> list[fed.DeliveryResult]:
    """The per-envelope results a refused batch's trailer carries, if any."""
    trailers = getattr(error, "trailing_metadata", lambda: None)() or ()
    for key, value in trailers:
        if key == RESULTS_KEY and isinstance(value, bytes):
            try:
                return list(fed.PushResponse.FromString(value).results)
            except DecodeError:
                return []
    return []


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in _TRANSIENT


def _refused_by_agreement(error: grpc.RpcError) -> bool:
    if error.code() != grpc.StatusCode.PERMISSION_DENIED:
        return False
    trailers = getattr(error, "trailing_metadata", lambda: None)() or ()
    return any(
        key == REFUSED_BY_AGREEMENT_KEY and value == REFUSED_BY_AGREEMENT_VALUE
        for key, value in trailers
    )
