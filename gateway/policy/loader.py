"""Loading and validating agreement files, with every problem named.

``load_policies`` reads ``federation.yaml`` (the known nodes) and the
agreement files beside it, and builds a :class:`PolicySet`. Validation does
not stop at the first mistake: an admin who edits three files wants to hear
about all of them at once. Every problem is one line,
``policies/central-china.yaml:14: flows[0].levels[2]: level 5 is out of
range ...``, naming file, line and key through ``node.yamlfile``.

Two grades of finding:

* **Errors** make the whole set unusable and ``load_policies`` raises
  ``ConfigError`` with all of them: unknown keys, kinds, categories or fields;
  levels outside 1–4; nodes that are not in ``federation.yaml``; a flow or
  withhold rule naming a node that is not a member; duplicate agreement ids;
  fields that can never be withheld.
* **Warnings** describe files that load but may not do what the admin means:
  an agreement with no members, no flows or a flow with no kinds (each allows
  nothing), conditions that can never match, and overlapping agreements that
  disagree about withholding a field for the same sender, receiver and kind
  (the stricter one wins at decision time; see ``overlap``). They are
  returned in ``PolicySet.warnings``; whoever loads decides how to show them.

``check_policies`` does the same work but returns errors and warnings
together instead of raising, for ``guantong policy validate``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from gateway.policy.evaluate import PolicySet
from gateway.policy.fields import check_field_name
from gateway.policy.model import MEMBERS, Agreement, Flow, NodeInfo, WithholdRule
from gateway.policy.overlap import overlap_warnings
from node.errors import ConfigError
from node.records import CATEGORIES, KINDS, LEVEL_LABELS, is_node_id
from node.yamlfile import KeyPath, YamlDocument, load_yaml

FEDERATION_FILE = "federation.yaml"

_AGREEMENT_KEYS = (
    "id",
    "version",
    "title",
    "valid_from",
    "valid_until",
    "members",
    "onward_sharing",
    "escalate_overdue_to",
    "flows",
    "withhold",
)
_FLOW_KEYS = (
    "name",
    "from",
    "to",
    "kinds",
    "categories",
    "levels",
    "exercise",
    "min_views",
    "min_reposts",
)
_WITHHOLD_KEYS = ("fields", "below_level", "to")
_NODE_KEYS = ("id", "name_zh", "name_en")
_AGREEMENT_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_LEVEL_RANGE = f"levels run from 1 ({LEVEL_LABELS[1]}) to 4 ({LEVEL_LABELS[4]})"
# Kinds whose facts carry no category, level or heat of their own.
_KINDS_WITHOUT_INCIDENT = frozenset({"notice", "retraction", "notice_ack"})


@dataclass
class PolicyCheck:
    """The outcome of reading a set of policy files.

    ``policy_set`` is None when there are errors.
    """

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    policy_set: PolicySet | None = None


def load_policies(paths: Path | Sequence[Path]) -> PolicySet:
    """Load a policy directory or files; raise ConfigError listing every error.

    ``paths`` is a directory (``federation.yaml`` and every ``*.yaml`` in it;
    subdirectories such as ``cases/`` are not read) or a list of files and
    directories. Without a ``federation.yaml`` among the files, the one beside
    the first file is used.
    """
    check = check_policies(paths)
    if check.policy_set is None:
        raise ConfigError(check.errors)
    return check.policy_set


def check_policies(paths: Path | Sequence[Path]) -> PolicyCheck:
    """Read and validate everything; collect errors and warnings, never raise."""
    check = PolicyCheck()
    federation_path, agreement_paths = _policy_files(paths, check)
    # None when the node list could not be read: node ids are then not
    # checked, rather than every one of them reported as unknown.
    nodes = _read_federation(federation_path, check) if federation_path else None

    loaded: list[tuple[Agreement, YamlDocument]] = []
    for path in agreement_paths:
        document = _read_yaml(path, check)
        if document is None:
            continue
        agreement = _AgreementReader(document, nodes, check).read()
        if agreement is not None:
            loaded.append((agreement, document))

    _check_duplicate_ids(loaded, check)
    check.warnings.extend(_escalation_route_warnings(loaded))
    check.warnings.extend(overlap_warnings(loaded))
    if not check.errors:
        agreements = tuple(sorted((a for a, _ in loaded), key=lambda a: a.id))
        check.policy_set = PolicySet(agreements, nodes or {}, tuple(check.warnings))
    return check


# --- files ------------------------------------------------------------------


def _policy_files(
    paths: Path | Sequence[Path], check: PolicyCheck
) -> tuple[Path | None, list[Path]]:
    """(federation.yaml, agreement files) named by ``paths``."""
    given = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    files: list[Path] = []
    for path in given:
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        elif path.is_file():
            files.append(path)
        else:
            check.errors.append(f"{path}: no such file or directory")

    federation = [p for p in files if p.name == FEDERATION_FILE]
    agreements = [p for p in files if p.name != FEDERATION_FILE]
    if federation:
        return federation[0], agreements
    if files:
        beside = files[0].parent / FEDERATION_FILE
        if beside.is_file():
            return beside, agreements
        check.errors.append(f"{beside}: not found; it lists the known nodes")
    elif not check.errors:
        check.errors.append(f"{', '.join(map(str, given))}: no policy files found")
    return None, agreements


def _read_yaml(path: Path, check: PolicyCheck) -> YamlDocument | None:
    try:
        return load_yaml(path)
    except ConfigError as exc:
        check.errors.extend(exc.problems)
        return None


def _read_federation(path: Path, check: PolicyCheck) -> dict[str, NodeInfo] | None:
    document = _read_yaml(path, check)
    if document is None:
        return None
    data = document.data
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        check.errors.append(document.problem(["nodes"], "must be a list of nodes"))
        return None

    nodes: dict[str, NodeInfo] = {}
    for i, entry in enumerate(data["nodes"]):
        keys: list[str | int] = ["nodes", i]
        if not isinstance(entry, dict):
            check.errors.append(document.problem(keys, "must be id, name_zh, name_en"))
            continue
        for key in sorted(set(entry) - set(_NODE_KEYS)):
            check.errors.append(
                document.problem([*keys, key], _unknown_key(key, _NODE_KEYS))
            )
        node_id, zh, en = (entry.get(k) for k in _NODE_KEYS)
        if not isinstance(node_id, str) or not is_node_id(node_id):
            message = f"{node_id!r} is not a node id (CN or CN-XX, e.g. CN-HB)"
            check.errors.append(document.problem([*keys, "id"], message))
        elif node_id in nodes:
            check.errors.append(
                document.problem([*keys, "id"], f"{node_id} is listed twice")
            )
        elif not isinstance(zh, str) or not isinstance(en, str):
            message = "a node needs name_zh and name_en (the names staff read)"
            check.errors.append(document.problem(keys, message))
        else:
            nodes[node_id] = NodeInfo(node_id, zh, en)
    return nodes


def _check_duplicate_ids(
    loaded: list[tuple[Agreement, YamlDocument]], check: PolicyCheck
) -> None:
    first: dict[str, YamlDocument] = {}
    for agreement, document in loaded:
        if agreement.id in first:
            other = first[agreement.id]
            where = f"{other.path}:{other.line_of(['id'])}"
            message = f"duplicate agreement id {agreement.id!r}, also used in {where}"
            check.errors.append(document.problem(["id"], message))
        else:
            first[agreement.id] = document


def _escalation_route_warnings(
    loaded: list[tuple[Agreement, YamlDocument]],
) -> list[str]:
    """An agreement that escalates overdue requests to a node needs some
    agreement to let escalations go from its members to that node."""
    warnings = []
    agreements = [agreement for agreement, _ in loaded]
    for agreement, document in loaded:
        target = agreement.escalate_overdue_to
        if target is None:
            continue
        cut_off = sorted(
            member
            for member in agreement.members - {target}
            if not any(_carries_escalation(a, member, target) for a in agreements)
        )
        if cut_off:
            message = (
                f"no agreement lets escalations go from {', '.join(cut_off)} to "
                f"{target}: their overdue requests are flagged but not escalated"
            )
            warnings.append(document.problem(["escalate_overdue_to"], message))
    return warnings


def _carries_escalation(agreement: Agreement, sender: str, receiver: str) -> bool:
    return {sender, receiver} <= agreement.members and any(
        "escalation" in flow.kinds
        and sender in flow.senders
        and receiver in flow.receivers
        for flow in agreement.flows
    )


def _unknown_key(key: object, known: Iterable[str]) -> str:
    return f"unknown key {key!r}; expected one of {', '.join(known)}"


# --- one agreement file -------------------------------------------------------


class _AgreementReader:
    """Turns one agreement file into an Agreement, noting every problem."""

    def __init__(
        self,
        document: YamlDocument,
        nodes: Mapping[str, NodeInfo] | None,
        check: PolicyCheck,
    ):
        self.document = document
        self.nodes = nodes
        self.check = check
        self.errors_before = len(check.errors)
        self.members: frozenset[str] = frozenset()

    def error(self, keys: KeyPath, message: str) -> None:
        self.check.errors.append(self.document.problem(keys, message))

    def warn(self, keys: KeyPath, message: str) -> None:
        self.check.warnings.append(self.document.problem(keys, message))

    def read(self) -> Agreement | None:
        data = self.document.data
        if not isinstance(data, dict):
            self.error([], "an agreement file must be a mapping of id, version, ...")
            return None
        self.unknown_keys(data, [], _AGREEMENT_KEYS)

        agreement_id = self.agreement_id(data.get("id"))
        version = self.whole_number(data, [], "version", minimum=1, required=True)
        title = data.get("title")
        if not isinstance(title, str) or not title.strip():
            self.error(["title"], "a title is required (what staff read)")
        valid_from = self.date(data, "valid_from")
        valid_until = self.date(data, "valid_until")
        if valid_from and valid_until and valid_until < valid_from:
            self.error(["valid_until"], f"is before valid_from {valid_from}")
        self.members = self.member_list(data)
        onward = self.boolean(data, [], "onward_sharing", default=False)
        escalate_to = self.escalation_target(data)
        flows = self.flows(data.get("flows"))
        withhold = self.withhold_rules(data.get("withhold"))
        self.check_heat_is_visible(flows, withhold)

        if len(self.check.errors) > self.errors_before:
            return None
        return Agreement(
            id=agreement_id,
            version=version or 0,
            title=str(title),
            members=self.members,
            flows=flows,
            withhold=withhold,
            valid_from=valid_from,
            valid_until=valid_until,
            onward_sharing=onward,
            escalate_overdue_to=escalate_to,
            source=str(self.document.path),
        )

    # --- scalar fields --------------------------------------------------------

    def unknown_keys(self, data: dict, keys: list, known: Sequence[str]) -> None:
        for key in data:
            if key not in known:
                self.error([*keys, key], _unknown_key(key, known))

    def agreement_id(self, value: Any) -> str:
        if not isinstance(value, str) or not _AGREEMENT_ID.match(value):
            self.error(["id"], "an id of lowercase letters, digits and '-' is required")
            return ""
        return value

    def whole_number(
        self, data: dict, keys: list, key: str, minimum: int, required: bool = False
    ) -> int | None:
        value = data.get(key)
        if value is None:
            if required:
                self.error([*keys, key], "is required (a whole number)")
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.error(
                [*keys, key], f"must be a whole number >= {minimum}, got {value!r}"
            )
            return None
        return value

    def boolean(self, data: dict, keys: list, key: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.error([*keys, key], f"must be true or false, got {value!r}")
            return default
        return value

    def date(self, data: dict, key: str) -> date | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError:
                pass
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        self.error([key], f"must be a date like 2025-01-01, got {value!r}")
        return None

    def level(self, value: Any, keys: KeyPath) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(
                keys, f"a level is a number 1 to 4, got {value!r}; {_LEVEL_RANGE}"
            )
            return None
        if value not in LEVEL_LABELS:
            self.error(keys, f"level {value} is out of range: {_LEVEL_RANGE}")
            return None
        return value

    def escalation_target(self, data: dict) -> str | None:
        """``escalate_overdue_to``: the known node overdue requests go to."""
        if data.get("escalate_overdue_to") is None:
            return None
        value = data["escalate_overdue_to"]
        if not self.known_node(value, ["escalate_overdue_to"], check_member=False):
            return None
        return str(value)

    # --- node lists -----------------------------------------------------------

    def member_list(self, data: dict) -> frozenset[str]:
        if "members" not in data:
            self.error(["members"], "is required: the node ids in this agreement")
            return frozenset()
        members = self.node_list(data["members"], ["members"], members_word=False)
        if members is not None and not members:
            self.warn(["members"], "no members: this agreement allows nothing")
        return members or frozenset()

    def node_list(
        self, value: Any, keys: list, members_word: bool = True
    ) -> frozenset[str] | None:
        """Known node ids (and the word ``members``, expanded), else None."""
        if value is None:
            return frozenset()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.error(keys, "must be a list of node ids")
            return None
        found: set[str] = set()
        for i, item in enumerate(value):
            if members_word and item == MEMBERS:
                found |= self.members
            elif self.known_node(item, [*keys, i], check_member=members_word):
                found.add(item)
        return frozenset(found)

    def known_node(self, item: Any, keys: KeyPath, check_member: bool) -> bool:
        unknown = self.nodes is not None and item not in self.nodes
        if not isinstance(item, str) or unknown:
            known = ", ".join(self.nodes or ()) or "none"
            hint = " or the word 'members'" if check_member else ""
            self.error(keys, f"{item!r} is not a known node ({known}){hint}")
            return False
        if check_member and item not in self.members:
            self.error(keys, f"{item} is not a member of this agreement")
            return False
        return True

    # --- flows ----------------------------------------------------------------

    def flows(self, value: Any) -> tuple[Flow, ...]:
        if value is None or value == []:
            self.warn(["flows"], "no flows: this agreement allows nothing")
            return ()
        if not isinstance(value, list):
            self.error(["flows"], "must be a list of flows")
            return ()
        flows = [self.flow(entry, i) for i, entry in enumerate(value)]
        names = [flow.name for flow in flows if flow is not None]
        for i, flow in enumerate(flows):
            if flow is not None and names.count(flow.name) > 1:
                self.error(
                    ["flows", i, "name"], f"flow name {flow.name!r} is used twice"
                )
        return tuple(flow for flow in flows if flow is not None)

    def flow(self, entry: Any, index: int) -> Flow | None:
        keys: list[str | int] = ["flows", index]
        if not isinstance(entry, dict):
            self.error(keys, "a flow is a mapping with name, from, to, kinds, ...")
            return None
        self.unknown_keys(entry, keys, _FLOW_KEYS)
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            self.error([*keys, "name"], "every flow needs a name (used in decisions)")
            name = ""

        senders = self.direction(entry, keys, "from")
        receivers = self.direction(entry, keys, "to")
        kinds = self.kinds(entry, keys)
        flow = Flow(
            name=name,
            index=index,
            senders=senders,
            receivers=receivers,
            kinds=kinds,
            categories=self.categories(entry, keys),
            levels=self.levels(entry, keys),
            exercise=self.boolean(entry, keys, "exercise", default=True),
            min_views=self.whole_number(entry, keys, "min_views", minimum=0),
            min_reposts=self.whole_number(entry, keys, "min_reposts", minimum=0),
        )
        self.warn_if_never_matches(flow, keys)
        return flow

    def direction(self, entry: dict, keys: list, key: str) -> frozenset[str]:
        if key not in entry:
            self.error([*keys, key], "is required: node ids or the word 'members'")
            return frozenset()
        nodes = self.node_list(entry[key], [*keys, key])
        if nodes is not None and not nodes and self.members:
            self.warn([*keys, key], "names no node: this flow allows nothing")
        return nodes or frozenset()

    def kinds(self, entry: dict, keys: list) -> frozenset[str]:
        if "kinds" not in entry:
            self.error([*keys, "kinds"], f"is required: some of {', '.join(KINDS)}")
            return frozenset()
        kinds = self.names(entry["kinds"], [*keys, "kinds"], KINDS, "kind")
        if kinds is not None and not kinds:
            self.warn([*keys, "kinds"], "no kinds: this flow allows nothing")
        return kinds or frozenset()

    def categories(self, entry: dict, keys: list) -> frozenset[str] | None:
        if "categories" not in entry:
            return None
        found = self.names(
            entry["categories"], [*keys, "categories"], CATEGORIES, "category"
        )
        if found is not None and not found:
            self.warn([*keys, "categories"], "no categories: this flow allows nothing")
        return found

    def levels(self, entry: dict, keys: list) -> frozenset[int] | None:
        if "levels" not in entry:
            return None
        value = entry["levels"]
        if not isinstance(value, list):
            self.error([*keys, "levels"], f"must be a list of levels; {_LEVEL_RANGE}")
            return None
        levels = {
            self.level(item, [*keys, "levels", i]) for i, item in enumerate(value)
        }
        if not value:
            self.warn([*keys, "levels"], "no levels: this flow allows nothing")
        return frozenset(level for level in levels if level is not None)

    def names(
        self, value: Any, keys: list, known: Mapping[str, Any], what: str
    ) -> frozenset[str] | None:
        if value is None:
            return frozenset()
        if not isinstance(value, list):
            self.error(
                keys, f"must be a list; each {what} is one of {', '.join(known)}"
            )
            return None
        found = set()
        for i, item in enumerate(value):
            if item in known:
                found.add(item)
            else:
                message = f"unknown {what} {item!r}; one of {', '.join(known)}"
                self.error([*keys, i], message)
        return frozenset(found)

    def warn_if_never_matches(self, flow: Flow, keys: list) -> None:
        conditioned = flow.categories is not None or flow.levels is not None
        if (
            flow.kinds
            and flow.kinds <= _KINDS_WITHOUT_INCIDENT
            and (conditioned or flow.has_heat_condition)
        ):
            message = (
                "categories, levels and heat never match "
                f"{', '.join(sorted(flow.kinds))} records: they carry none"
            )
            self.warn(keys, message)

    # --- withholding ----------------------------------------------------------

    def withhold_rules(self, value: Any) -> tuple[WithholdRule, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(["withhold"], "must be a list of {fields, below_level, to}")
            return ()
        rules = (self.withhold_rule(entry, i) for i, entry in enumerate(value))
        return tuple(rule for rule in rules if rule is not None)

    def withhold_rule(self, entry: Any, index: int) -> WithholdRule | None:
        keys: list[str | int] = ["withhold", index]
        if not isinstance(entry, dict):
            self.error(
                keys, "a withhold rule is a mapping with fields, below_level, to"
            )
            return None
        self.unknown_keys(entry, keys, _WITHHOLD_KEYS)
        fields = self.field_names(entry.get("fields"), [*keys, "fields"])

        below_level = None
        if "below_level" in entry:
            below_level = self.level(entry["below_level"], [*keys, "below_level"])
            if below_level == 4:
                message = "nothing is less serious than Ⅳ: this rule never applies"
                self.warn([*keys, "below_level"], message)
        receivers = None
        if "to" in entry:
            receivers = self.node_list(entry["to"], [*keys, "to"])
        return WithholdRule(fields, below_level, receivers)

    def check_heat_is_visible(
        self, flows: Sequence[Flow], withhold: Sequence[WithholdRule]
    ) -> None:
        """Heat conditions need the heat figures at the receiver.

        The receiver checks a flow's heat condition again from the record it
        gets; with ``incident.platforms`` withheld it would see no heat and
        refuse what the sender was allowed to send.
        """
        for flow in flows:
            if not flow.has_heat_condition:
                continue
            for index, rule in enumerate(withhold):
                towards = (
                    rule.receivers if rule.receivers is not None else flow.receivers
                )
                if "incident.platforms" in rule.fields and towards & flow.receivers:
                    self.error(
                        ["withhold", index, "fields"],
                        "incident.platforms cannot be withheld where flow "
                        f"'{flow.name}' has a heat condition: receivers check heat "
                        "from those figures and would refuse the record",
                    )

    def field_names(self, value: Any, keys: list) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.error(keys, "a list of fields is required, e.g. [incident.entities]")
            return ()
        names = []
        for i, name in enumerate(value):
            problem = check_field_name(name) if isinstance(name, str) else "not text"
            if problem is None:
                names.append(name)
            else:
                self.error([*keys, i], problem)
        return tuple(names)
