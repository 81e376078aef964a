"""Versions and retractions between real nodes: updates reach former holders,
only a subject's origin may version it, stale versions are recorded no-ops,
and a retraction reaches every holder and stays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
import pytest
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import federation_pb2_grpc as fed_grpc
from guantong.v1 import local_pb2 as api
from guantong.v1 import records_pb2 as pb

from gateway.identity import TlsFiles, secure_channel
from node.envelopes import seal
from node.record_json import record_from_json
from node.records import subject_id
from tests.conftest import Federation, eventually
from tests.helpers import inbox, incident, local, pending, publish


@pytest.fixture
def heat_gated(certs, tmp_path, policies_copy):
    """The shipped agreements, but national reporting asks for a million views,
    so an ordinary incident reaches the central-china members and not CN."""
    path = policies_copy / "national-reporting.yaml"
    text = path.read_text("utf-8")
    assert text.count("    levels: [1, 2, 3]\n") == 1
    path.write_text(
        text.replace(
            "    levels: [1, 2, 3]\n", "    levels: [1, 2, 3]\n    min_views: 1000000\n"
        ),
        "utf-8",
    )
    fed_ = Federation(certs, tmp_path / "nodes", policies=policies_copy)
    yield fed_
    fed_.stop_all()


def versions_held(node, ref: str) -> list[int]:
    return [m.envelope.subject_version for m in inbox(node) if m.envelope.ref == ref]


def destination(response, node_id: str):
    return next(d for d in response.destinations if d.node == node_id)


def federation_stub(node, certs, caller: str) -> fed_grpc.FederationStub:
    files = TlsFiles.for_node(certs, caller)
    channel = secure_channel(
        node.federation_address, files, expected_node_id=node.node_id
    )
    return fed_grpc.FederationStub(channel)


def forged(origin: str, data: dict, version: int, subject: str | None = None):
    """An envelope as ``origin`` would send it, for pushing by hand."""
    ref, record = record_from_json(data, origin)
    envelope = seal(
        message_id=uuid.uuid4().hex,
        origin=origin,
        author_unit="",
        created_at=datetime.now(UTC),
        subject_id=subject or subject_id(origin, ref),
        subject_version=version,
        ref=ref,
        record=record,
        exercise=False,
    )
    envelope.agreement_id, envelope.agreement_version = "central-china", 1
    return envelope


def push(stub, *envelopes) -> list[fed.DeliveryResult]:
    return list(
        stub.Push(fed.PushRequest(envelopes=list(envelopes)), timeout=5).results
    )


def show(node, ref: str, origin: str = "") -> api.ShowResponse:
    return local(node).Show(api.ShowRequest(ref=ref, origin=origin), timeout=10)


# --- updates ----------------------------------------------------------------------


def test_lowered_update_reaches_the_former_holders_and_nobody_else(heat_gated):
    hb = heat_gated.start("CN-HB", ("CN-HN", "CN-JX", "CN"))
    hn = heat_gated.start("CN-HN", ("CN-HB",))
    jx = heat_gated.start("CN-JX", ("CN-HB",))
    cn = heat_gated.start("CN", ("CN-HB",))

    first = publish(hb, incident("HB-1", level=2))
    assert {d.node for d in first.destinations if d.delivery_state} == {
        "CN-HN",
        "CN-JX",
    }
    eventually(
        lambda: versions_held(hn, "HB-1") == [1] and versions_held(jx, "HB-1") == [1]
    )

    # Level Ⅳ is below central-china's threshold: from scratch nobody gets it.
    update = publish(hb, incident("HB-1", level=4, summary="经核查，影响范围有限"))

    assert update.subject_version == 2
    for holder in ("CN-HN", "CN-JX"):
        routed = destination(update, holder)
        assert routed.allowed and routed.delivery_state
        assert routed.agreement_id == "central-china"
        assert routed.rule == "central-china/held-earlier-version"
        assert (
            "holds an earlier version (v1, sent under central-china v1)"
            in routed.reason
        )
        assert "Ⅳ" in routed.reason  # and why the agreements alone would not send it
    never_held = destination(update, "CN")
    assert not never_held.allowed and not never_held.delivery_state

    eventually(
        lambda: (
            versions_held(hn, "HB-1") == [1, 2] and versions_held(jx, "HB-1") == [1, 2]
        )
    )
    eventually(lambda: pending(hb) == 0)
    assert inbox(cn) == []
    # The receivers let it in although their own copies deny level Ⅳ from scratch.
    assert hn.store.refusals() == [] and jx.store.refusals() == []
    [v2] = [m for m in inbox(hn) if m.envelope.subject_version == 2]
    assert v2.record.incident.level == 4 and v2.envelope.agreement_id == "central-china"


def test_update_of_a_subject_nobody_held_goes_only_where_the_agreements_allow(
    federation,
):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))

    publish(hb, incident("HB-LOW", level=4))
    update = publish(hb, incident("HB-LOW", level=4, summary="更新"))
    publish(hb, incident("HB-MARK", level=2))

    assert not destination(update, "CN-HN").allowed
    eventually(lambda: [m.envelope.ref for m in inbox(hn)] == ["HB-MARK"])
    eventually(lambda: pending(hb) == 0)


# --- who may version a subject, and in what order ----------------------------------


def test_version_of_another_nodes_subject_is_refused_and_recorded(federation, certs):
    hb = federation.start("CN-HB", ("CN-JX",))
    jx = federation.start("CN-JX", ("CN-HB", "CN-HN"))
    federation.start("CN-HN", ("CN-JX",))
    publish(hb, incident("HB-1", level=2))
    eventually(lambda: versions_held(jx, "HB-1") == [1])

    # CN-HN sends a "version 2" of CN-HB's subject as its own record.
    hijack = forged(
        "CN-HN", incident("HB-1", level=2, title="被改写的标题"), 2, "CN-HB/HB-1"
    )
    [result] = push(federation_stub(jx, certs, "CN-HN"), hijack)

    assert result.outcome == fed.REJECTED_INVALID
    assert "only a subject's origin may publish versions of it" in result.reason
    [refusal] = jx.store.refusals()
    assert (refusal.sender, refusal.origin, refusal.outcome) == (
        "CN-HN",
        "CN-HN",
        "rejected_invalid",
    )
    assert "CN-HB/HB-1" in refusal.reason
    held = show(jx, "HB-1", origin="CN-HB")
    assert [v.version for v in held.versions] == [1]
    assert held.versions[0].record.incident.title == "事件 HB-1"


def test_stale_version_is_a_recorded_no_op_that_overwrites_nothing(federation, certs):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    publish(hb, incident("HB-1", level=4))  # version 1 is not for CN-HN
    publish(hb, incident("HB-1", level=2, title="升级后的标题"))
    eventually(lambda: versions_held(hn, "HB-1") == [2])
    hb_stub = federation_stub(hn, certs, "CN-HB")

    # Version 1 turns up late, after version 2.
    late = forged("CN-HB", incident("HB-1", level=4, title="迟到的第一版"), 1)
    [result] = push(hb_stub, late)

    # A success to the sender, so it settles instead of retrying for ever ...
    assert result.outcome == fed.DUPLICATE
    assert result.reason == "stale version 1, holding 2"
    # ... recorded, and nothing overwritten.
    [refusal] = hn.store.refusals()
    assert (refusal.outcome, refusal.reason) == (
        "stale_version",
        "stale version 1, holding 2",
    )
    assert versions_held(hn, "HB-1") == [2]
    assert (
        show(hn, "HB-1", origin="CN-HB").versions[-1].record.incident.title
        == "升级后的标题"
    )


def test_same_version_with_other_content_is_a_recorded_conflict(federation, certs):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    publish(hb, incident("HB-1", level=2))
    [held] = eventually(lambda: inbox(hn))
    hb_stub = federation_stub(hn, certs, "CN-HB")

    other = forged("CN-HB", incident("HB-1", level=2, title="另一份第一版"), 1)
    [conflict] = push(hb_stub, other)
    [replay] = push(hb_stub, held.envelope)

    assert conflict.outcome == fed.REJECTED_INVALID
    assert (
        conflict.reason == "version 1 of CN-HB/HB-1 is already held with other content"
    )
    assert (replay.outcome, replay.reason) == (fed.DUPLICATE, "")
    assert [r.outcome for r in hn.store.refusals()] == ["rejected_invalid"]
    assert [m.record.incident.title for m in inbox(hn)] == ["事件 HB-1"]


# --- retractions -------------------------------------------------------------------


def test_retraction_reaches_every_holder_including_the_national_node(federation, certs):
    hb = federation.start("CN-HB", ("CN-HN", "CN"))
    hn = federation.start("CN-HN", ("CN-HB",))
    cn = federation.start("CN", ("CN-HB",))
    publish(hb, incident("HB-1", level=2))
    # Lowered: from here on only the delivery history sends it anywhere.
    publish(hb, incident("HB-1", level=4))
    publish(hb, incident("HB-NEVER", level=4))
    eventually(
        lambda: (
            versions_held(hn, "HB-1") == [1, 2] and versions_held(cn, "HB-1") == [1, 2]
        )
    )

    retraction = local(hb).Retract(
        api.RetractRequest(ref="HB-1", reason="经核实为不实信息"), timeout=10
    )
    nothing_to_reach = local(hb).Retract(
        api.RetractRequest(ref="HB-NEVER", reason="误报"), timeout=10
    )

    assert retraction.subject_version == 3
    for holder in ("CN-HN", "CN"):
        routed = destination(retraction, holder)
        assert routed.allowed and routed.rule.endswith("/held-earlier-version")
    assert not destination(retraction, "CN-JX").allowed
    assert destination(retraction, "CN-JX").rule == "never-held"
    assert not any(d.allowed for d in nothing_to_reach.destinations)

    for node in (hn, cn):
        eventually(lambda node=node: show(node, "HB-1", origin="CN-HB").retracted)
        shown = show(node, "HB-1", origin="CN-HB")
        assert (
            shown.retracted_version == 3
            and shown.retraction_reason == "经核实为不实信息"
        )
        assert shown.kind == pb.INCIDENT  # a retraction is a version, not a kind
    assert show(hb, "HB-1").retracted
    eventually(lambda: pending(hb) == 0)
    assert [r.reason for r in hn.store.refusals()] == []


def test_replayed_older_version_does_not_revive_a_retracted_subject(federation, certs):
    hb = federation.start("CN-HB", ("CN",))
    cn = federation.start("CN", ("CN-HB",))
    publish(hb, incident("HB-1", level=2))
    [v1] = eventually(lambda: inbox(cn))
    local(hb).Retract(api.RetractRequest(ref="HB-1", reason="撤回"), timeout=10)
    eventually(lambda: show(cn, "HB-1", origin="CN-HB").retracted)
    hb_stub = federation_stub(cn, certs, "CN-HB")

    [replay] = push(hb_stub, v1.envelope)
    [older] = push(hb_stub, forged("CN-HB", incident("HB-1", level=2, title="旧闻"), 1))
    [after] = push(hb_stub, forged("CN-HB", incident("HB-1", level=2, title="复活"), 3))

    assert replay.outcome == fed.DUPLICATE
    assert (
        older.outcome == fed.REJECTED_INVALID
    )  # version 1 is held, with other content
    assert after.outcome == fed.DUPLICATE
    assert (
        after.reason
        == "version 3 comes after the retraction of CN-HB/HB-1 at version 2"
    )
    shown = show(cn, "HB-1", origin="CN-HB")
    assert shown.retracted and [v.version for v in shown.versions] == [1, 2]

    # The publisher takes no further version either.
    with pytest.raises(grpc.RpcError) as refused:
        publish(hb, incident("HB-1", level=2))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "retracted" in refused.value.details()


def test_retraction_of_a_subject_never_held_is_refused_and_recorded(federation, certs):
    federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    retraction = seal(
        message_id=uuid.uuid4().hex,
        origin="CN-HB",
        author_unit="",
        created_at=datetime.now(UTC),
        subject_id="CN-HB/HB-9",
        subject_version=2,
        ref="HB-9",
        record=pb.Record(
            retraction=pb.Retraction(subject_id="CN-HB/HB-9", reason="撤回")
        ),
        exercise=False,
    )

    with pytest.raises(grpc.RpcError) as refused:
        push(federation_stub(hn, certs, "CN-HB"), retraction)

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    [refusal] = hn.store.refusals()
    assert refusal.kind == "retraction" and "never held" in refusal.reason
    assert inbox(hn) == []
