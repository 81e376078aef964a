"""Withholding: a withheld field is absent at the receiver, never blanked."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from guantong.v1 import records_pb2 as pb

from gateway.policy import apply_withholding
from gateway.policy.fields import PROTECTED, WITHHOLDABLE, check_field_name


def full_incident() -> pb.Record:
    incident = pb.IncidentReport(
        title="会员店食品中发现异物",
        summary="消费者发布视频称在某会员店购买的食品中发现异物。",
        category=pb.FOOD_DRUG_SAFETY,
        level=3,
        phase=pb.DEVELOPING,
        regions=["310000"],
        entities=["某会员店"],
        keywords=["异物"],
        first_seen=Timestamp(seconds=1_740_000_000),
        exercise=True,
    )
    incident.platforms.add(name="微博", views=3_600_000, reposts=12_000)
    return pb.Record(incident=incident)


def full_records() -> dict[str, pb.Record]:
    return {
        "incident": full_incident(),
        "statement": pb.Record(
            statement=pb.ResponseStatement(
                incident_subject="CN-SH/SH-1",
                text="已到店核查并封存同批次产品。",
                approved_by="新闻宣传处",
                supersedes="CN-SH/SH-1-S0",
            )
        ),
        "joint_request": pb.Record(
            joint_request=pb.JointHandlingRequest(
                incident_subject="CN-SH/SH-1",
                to_node="CN-JS",
                ask="请协助核查。",
                due_at=Timestamp(seconds=1_740_007_200),
            )
        ),
        "notice": pb.Record(
            notice=pb.Notice(title="通报", body="正文", to_nodes=["CN-HB"])
        ),
        "retraction": pb.Record(
            retraction=pb.Retraction(subject_id="CN-SH/SH-1", reason="误报")
        ),
    }


def _present(message: object, name: str) -> bool:
    value = getattr(message, name)
    if hasattr(value, "ListFields"):  # a message field
        return message.HasField(name)  # type: ignore[attr-defined]
    if isinstance(value, str | bytes):
        return value != type(value)()
    try:
        return len(value) > 0
    except TypeError:
        return bool(value)


WITHHOLDABLE_FIELDS = [
    (kind, name)
    for kind, names in sorted(WITHHOLDABLE.items())
    for name in sorted(names)
]


@pytest.mark.parametrize(("kind", "name"), WITHHOLDABLE_FIELDS)
def test_every_withholdable_field_is_absent_after_withholding(
    kind: str, name: str
) -> None:
    original = full_records()[kind]
    assert _present(getattr(original, kind), name), "the fixture must set every field"

    withheld = apply_withholding(original, [f"{kind}.{name}"])

    if withheld is None:  # the only field of substance was withheld
        return
    body = getattr(withheld, kind)
    assert not _present(body, name)
    # Cleared, not blanked: the wire form does not contain the field at all.
    assert name not in {field.name for field, _ in body.ListFields()}
    # Everything else is untouched, and the original is not modified.
    for other in WITHHOLDABLE[kind] - {name}:
        assert _present(body, other)
    assert _present(getattr(original, kind), name)


def test_incident_keeps_category_level_and_exercise_mark() -> None:
    names = [f"incident.{name}" for name in WITHHOLDABLE["incident"] - {"title"}]
    withheld = apply_withholding(full_incident(), names)
    assert withheld is not None
    incident = withheld.incident
    assert incident.title
    assert (incident.category, incident.level, incident.exercise) == (
        pb.FOOD_DRUG_SAFETY,
        3,
        True,
    )
    assert len(incident.entities) == 0 and len(incident.platforms) == 0
    assert not incident.HasField("first_seen")


def test_fields_of_another_kind_are_ignored() -> None:
    record = full_incident()
    assert apply_withholding(record, ["statement.text", "notice.body"]) == record


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("incident", ["incident.title", "incident.summary"]),
        ("statement", ["statement.text"]),
        ("joint_request", ["joint_request.ask"]),
        ("notice", ["notice.title", "notice.body"]),
    ],
)
def test_record_empty_of_substance_is_not_sent(kind: str, names: list[str]) -> None:
    assert apply_withholding(full_records()[kind], names) is None


def test_one_field_of_substance_is_enough() -> None:
    assert apply_withholding(full_incident(), ["incident.title"]) is not None
    notice = full_records()["notice"]
    assert apply_withholding(notice, ["notice.body"]) is not None


def test_blank_text_counts_as_no_substance() -> None:
    record = full_incident()
    record.incident.summary = "   "
    assert apply_withholding(record, ["incident.title"]) is None


@pytest.mark.parametrize("name", sorted(PROTECTED))
def test_protected_fields_cannot_be_withheld(name: str) -> None:
    problem = check_field_name(name)
    assert problem is not None and "cannot be withheld" in problem
    record = full_records()[name.split(".")[0]]
    with pytest.raises(ValueError):
        apply_withholding(record, [name])


@pytest.mark.parametrize("name", ["entities", "incident.nothing", "tweet.text"])
def test_unknown_field_names_are_explained(name: str) -> None:
    problem = check_field_name(name)
    assert problem is not None and "unknown field" in problem
