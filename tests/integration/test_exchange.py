"""Publishing and delivery between real nodes over real mTLS."""

from __future__ import annotations

from guantong.v1 import local_pb2 as api

from tests.conftest import eventually
from tests.helpers import inbox, inbox_refs, incident, local, pending, publish


def test_published_incident_reaches_the_member_the_agreement_allows(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))

    response = publish(hb, incident("HB-1", level=2, exercise=True))

    to_hn = [d for d in response.destinations if d.node == "CN-HN"][0]
    assert to_hn.allowed and to_hn.agreement_id == "central-china"
    messages = eventually(lambda: inbox(hn))
    assert [m.envelope.ref for m in messages] == ["HB-1"]
    received = messages[0]
    assert received.received_from == "CN-HB"
    assert received.envelope.origin_node == "CN-HB"
    assert received.envelope.agreement_id == "central-china"
    assert received.envelope.exercise and received.record.incident.exercise
    assert received.record.incident.title == "事件 HB-1"


def test_record_no_agreement_allows_is_not_sent_and_says_why(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))

    publish(hb, incident("HB-LOW", level=4))
    publish(hb, incident("HB-HIGH", level=1))

    eventually(lambda: inbox_refs(hn) == ["HB-HIGH"])
    # The receiver stores before it answers: wait for the sender to settle.
    eventually(lambda: pending(hb) == 0)
    delivery = local(hb).Delivery(api.DeliveryRequest(ref="HB-LOW"), timeout=10)
    to_hn = [d for d in delivery.destinations if d.node == "CN-HN"][0]
    assert not to_hn.allowed
    assert "central-china" in to_hn.rule and "Ⅳ" in to_hn.reason


def test_peer_that_was_down_receives_the_backlog_in_order(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    refs = [f"HB-{i:03d}" for i in range(40)]
    for ref in refs:
        publish(hb, incident(ref))

    # The sender has failed and is backing off; the backoff is in the store.
    eventually(lambda: hb.store.backoff("CN-HN").failed_attempts >= 1)
    assert pending(hb) == len(refs)

    hn = federation.start("CN-HN", ("CN-HB",))
    eventually(lambda: len(inbox(hn)) == len(refs))
    assert inbox_refs(hn) == refs
    eventually(lambda: hb.store.backoff("CN-HN").failed_attempts == 0)


def test_sender_restarted_mid_backlog_loses_nothing_and_duplicates_nothing(federation):
    small_batches = {
        "delivery": {"batch_size": 3, "initial_backoff_ms": 20, "max_backoff_s": 0.2}
    }
    hb = federation.start("CN-HB", ("CN-HN",), **small_batches)
    refs = [f"HB-{i:03d}" for i in range(150)]
    for ref in refs:
        publish(hb, incident(ref))

    hn = federation.start("CN-HN", ("CN-HB",))
    eventually(lambda: len(inbox(hn)) >= 10, interval_s=0.001)
    federation.stop("CN-HB")
    delivered_before_restart = len(inbox(hn))

    federation.start("CN-HB", ("CN-HN",), **small_batches)
    eventually(lambda: len(inbox(hn)) == len(refs))
    messages = inbox(hn)
    assert [m.envelope.ref for m in messages] == refs
    assert len({m.envelope.message_id for m in messages}) == len(refs)
    assert delivered_before_restart < len(refs)


def test_receiver_restarted_mid_backlog_loses_nothing(federation):
    hb = federation.start("CN-HB", ("CN-HN",), delivery={"batch_size": 2})
    hn = federation.start("CN-HN", ("CN-HB",))
    refs = [f"HB-{i:03d}" for i in range(60)]
    for ref in refs:
        publish(hb, incident(ref))
    eventually(lambda: len(inbox(hn)) >= 4, interval_s=0.001)

    federation.stop("CN-HN")
    hn = federation.start("CN-HN", ("CN-HB",))
    eventually(lambda: len(inbox(hn)) == len(refs))
    assert inbox_refs(hn) == refs


def test_exchange_works_with_both_nodes_on_postgresql(federation, postgres_databases):
    hb = federation.start("CN-HB", ("CN-HN",), database_url=postgres_databases())
    hn = federation.start("CN-HN", ("CN-HB",), database_url=postgres_databases())
    publish(hb, incident("HB-PG", level=3))
    eventually(lambda: inbox_refs(hn) == ["HB-PG"])
    eventually(lambda: pending(hb) == 0)


def test_publishing_the_same_content_again_makes_no_new_version(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    first = publish(hb, incident("HB-1"))
    again = publish(hb, incident("HB-1"))
    changed = publish(hb, incident("HB-1", phase="peak"))

    assert (again.message_id, again.subject_version) == (first.message_id, 1)
    assert changed.subject_version == 2
    eventually(lambda: [m.envelope.subject_version for m in inbox(hn)] == [1, 2])
