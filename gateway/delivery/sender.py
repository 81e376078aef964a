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
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

import grpc
import structlog
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from guantong.v1 import federation_pb2 as fed
from guantong.v1 import federation_pb2_grpc as fed_grpc
from guantong.v1 import records_pb2 as pb
from node.clock import Clock
from node.config import DeliveryConfig
from node.storage import Store
from node.storage.schema import DEAD_LETTER, DELIVERED
from node.storage.types import OutboxItem, PeerBackoff

log = structlog.get_logger(__name__)

# Trailing metadata a receiver sets when it refuses a whole batch under its
# agreements (as opposed to refusing the caller's identity).
REFUSED_BY_AGREEMENT_KEY = "guantong-refused"
REFUSED_BY_AGREEMENT_VALUE = "agreement"

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
        if backoff.failed_attempts:
            self._log.info("peer.backoff_ended", after_attempts=backoff.failed_attempts)
        return Step(StepKind.DELIVERED, settled=settled)

    def _push_with_quick_retries(self, batch: list[OutboxItem]) -> fed.PushResponse:
        request = fed.PushRequest(envelopes=[_envelope(item) for item in batch])
        retrying = Retrying(
            stop=stop_after_attempt(self.config.quick_retries),
            wait=wait_fixed(self.config.quick_retry_wait_ms / 1000),
            retry=retry_if_exception(_is_transient),
            reraise=True,
            **({"sleep": self._sleep} if self._sleep else {}),
        )
        for attempt in retrying:
            with attempt:
                stub = fed_grpc.FederationStub(self._channel_for_peer())
                return stub.Push(request, timeout=self.config.push_timeout_s)
        raise AssertionError("unreachable: tenacity reraises")

    def _settle(self, batch: list[OutboxItem], response: fed.PushResponse) -> int:
        by_id = {result.message_id: result for result in response.results}
        settled: list[tuple[int, str, str]] = []
        for item in batch:
            message_id = _envelope(item).message_id
            result = by_id.get(message_id)
            if result is None:
                continue  # not answered: stays pending, goes again
            if result.outcome in (fed.ACCEPTED, fed.DUPLICATE):
                settled.append((item.id, DELIVERED, fed.DeliveryOutcome.Name(result.outcome)))
            else:
                outcome = fed.DeliveryOutcome.Name(result.outcome)
                self._log.warning(
                    "peer.message_refused",
                    message_id=message_id,
                    outcome=outcome,
                    reason=result.reason,
                )
                settled.append((item.id, DEAD_LETTER, f"{outcome}: {result.reason}"))
        self.store.settle(self.peer, settled, self.clock.now())
        self._log.info("peer.batch_delivered", messages=len(settled))
        return len(settled)

    def _settle_all_refused(self, batch: list[OutboxItem], error: grpc.RpcError) -> Step:
        reason = f"REFUSED_BY_AGREEMENT: {error.details()}"
        self._log.warning("peer.batch_refused", messages=len(batch), reason=error.details())
        now = self.clock.now()
        self.store.settle(self.peer, [(item.id, DEAD_LETTER, reason) for item in batch], now)
        return Step(StepKind.DELIVERED, settled=len(batch))

    def _back_off(self, backoff: PeerBackoff, error: grpc.RpcError) -> Step:
        attempts = backoff.failed_attempts + 1
        delay_s = min(
            self.config.max_backoff_s,
            self.config.initial_backoff_ms / 1000 * 2 ** (attempts - 1),
        )
        delay_s *= 0.5 + self.rand() / 2  # jitter, so peers that fail together retry apart
        next_attempt_at = self.clock.now() + timedelta(seconds=delay_s)
        reason = f"{error.code().name}: {error.details()}"
        self.store.save_backoff(PeerBackoff(self.peer, attempts, next_attempt_at, reason))
        event = "peer.backoff_started" if attempts == 1 else "peer.backoff_extended"
        self._log.warning(event, attempts=attempts, retry_in_s=round(delay_s, 3), error=reason)
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
