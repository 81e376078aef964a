"""The demo federation: seven nodes on this machine, the sample file published
through them, and a summary of who received what and why not.

Each node is a separate ``guantong node run`` process with its own SQLite
database and its own certificate from a freshly made development CA. The demo
publishes every record through its publishing node's local API, waits until
every outbox has settled, then asks each node what it received and each
publisher why a record did not reach the others. Everything lives under one
work folder that is made anew on every run.

After the sample file, the demo shows a statement being superseded: CN-SH
publishes a new statement that replaces SH-2025-0315-01-S1, and the demo
prints where each went and how every receiver of the old one now shows it.
These lines follow the summary; the JSON summary covers the sample file only.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from guantong.v1 import local_pb2 as api
from guantong.v1 import local_pb2_grpc as api_grpc
from guantong.v1 import records_pb2 as pb
from guantong.v1 import workflow_pb2 as wf
from guantong.v1 import workflow_pb2_grpc as wf_grpc

from gateway.identity import init_ca, issue_node_cert
from gateway.policy import PolicySet, expected_receivers, load_policies
from node.errors import GuantongError
from node.record_json import record_from_json
from node.records import SUPERSEDED_LABEL
from node.storage.schema import DELIVERED
from node.workflow.wire import action_from_pb

DEMO_NODES = ("CN", "CN-HB", "CN-HN", "CN-JX", "CN-SH", "CN-JS", "CN-GS")
PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 120.0

# The sample's joint-handling request the demo takes through its lifecycle.
LIFECYCLE_REQUEST = ("CN-HB", "HB-DRILL-01-R1")
# The statement the demo supersedes after the sample file, and its successor.
SUPERSEDED_REF = "SH-2025-0315-01-S1"
SUPERSEDING = {
    "ref": "SH-2025-0315-01-S2",
    "node": "CN-SH",
    "kind": "statement",
    "incident_ref": "SH-2025-0315-01",
    "supersedes": SUPERSEDED_REF,
    "text": (
        "市场监管部门已对涉事企业立案调查，责令涉事门店停业整改，"
        "处理结果将及时向社会公布。"
    ),
    "approved_by": "上海市市场监管局新闻宣传处",
}


@dataclass
class DemoNode:
    node_id: str
    federation_port: int
    local_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def local_address(self) -> str:
        return f"127.0.0.1:{self.local_port}"


def run_demo(
    records_path: Path,
    policies_dir: Path,
    work_dir: Path,
    out: Callable[[str], None] = print,
) -> Path:
    """Run the whole demo; return the path of the JSON summary.

    One demo at a time may use a work folder: a second one is refused rather
    than wiping the folder under the first one's nodes.
    """
    work_dir = work_dir.resolve()
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = work_dir.parent / f".{work_dir.name}.lock"
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GuantongError(
                f"another demo is running in {work_dir}; wait for it to finish "
                "or give --work-dir"
            ) from None
        return _run_demo(records_path, policies_dir, work_dir, out)


def _run_demo(
    records_path: Path,
    policies_dir: Path,
    work_dir: Path,
    out: Callable[[str], None],
) -> Path:
    policy = load_policies(policies_dir)
    records = [
        json.loads(line)
        for line in records_path.read_text("utf-8").splitlines()
        if line.strip()
    ]

    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    certs = work_dir / "certs"
    init_ca(certs)
    nodes = _plan_nodes(work_dir)
    for node in nodes.values():
        issue_node_cert(certs, node.node_id)
        _write_config(node, nodes, policy, policies_dir, certs)
    out(f"made a development CA and certificates for {len(nodes)} nodes in {certs}")

    try:
        for node in nodes.values():
            node.process = _start(node)
        _wait_healthy(nodes.values())
        out(
            "nodes up: "
            + ", ".join(
                f"{n.node_id} (local {n.local_address})" for n in nodes.values()
            )
        )

        stubs = {
            n.node_id: api_grpc.LocalStub(grpc.insecure_channel(n.local_address))
            for n in nodes.values()
        }
        for data in records:
            ref, record = record_from_json(data, data["node"])
            stubs[data["node"]].Publish(
                api.PublishRequest(ref=ref, record=record), timeout=30
            )
        out(f"published {len(records)} records from {records_path.name}")

        _wait_settled(stubs)
        summary = _summarise(records, stubs)
        superseding = _supersede_statement(records, stubs)
        lifecycle = _request_lifecycle(records, nodes)
    finally:
        _stop_all(nodes.values())

    expected = expected_receivers(records_path, policy)
    _print_summary(summary, out)
    for line in superseding:
        out(line)
    for line in lifecycle:
        out(line)
    mismatches = {
        ref: {
            "received": sorted(entry["received_by"]),
            "agreements_imply": sorted(expected.get(ref, set())),
        }
        for ref, entry in summary.items()
        if set(entry["received_by"]) != expected.get(ref, set())
    }
    summary_path = work_dir / "summary.json"
    summary_path.write_text(
        json.dumps(
            {ref: entry["received_by"] for ref, entry in summary.items()},
            ensure_ascii=False,
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    if mismatches:
        raise GuantongError(
            f"delivery differs from what the agreements imply: {mismatches}"
        )
    out("every record reached exactly the nodes its agreements allow")
    return summary_path


def _plan_nodes(work_dir: Path) -> dict[str, DemoNode]:
    ports = _free_ports(2 * len(DEMO_NODES))
    return {
        node_id: DemoNode(node_id, ports[2 * i], ports[2 * i + 1], work_dir / node_id)
        for i, node_id in enumerate(DEMO_NODES)
    }


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _peers_of(node_id: str, policy: PolicySet) -> set[str]:
    """Nodes that share at least one agreement with ``node_id``."""
    peers: set[str] = set()
    for agreement in policy.agreements:
        if node_id in agreement.members:
            peers.update(agreement.members)
    peers.discard(node_id)
    return peers


def _write_config(
    node: DemoNode,
    nodes: dict[str, DemoNode],
    policy: PolicySet,
    policies_dir: Path,
    certs: Path,
) -> None:
    node.folder.mkdir(parents=True, exist_ok=True)
    config = {
        "node_id": node.node_id,
        "data_dir": str(node.folder / "data"),
        "policies": str(policies_dir.resolve()),
        "tls": {
            "ca": str(certs / "ca.pem"),
            "cert": str(certs / node.node_id / "node.pem"),
            "key": str(certs / node.node_id / "node.key"),
        },
        "federation": {"listen": f"127.0.0.1:{node.federation_port}"},
        "local_api": {"listen": f"127.0.0.1:{node.local_port}"},
        "peers": {
            peer: {"address": f"127.0.0.1:{nodes[peer].federation_port}"}
            for peer in sorted(_peers_of(node.node_id, policy))
            if peer in nodes
        },
        "delivery": {"initial_backoff_ms": 200, "max_backoff_s": 2.0},
    }
    (node.folder / "node.yaml").write_text(
        yaml.safe_dump(config, sort_keys=False), "utf-8"
    )


def _start(node: DemoNode) -> subprocess.Popen[bytes]:
    log_file = (node.folder / "node.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "node.cli",
        "node",
        "run",
        "--config",
        str(node.folder / "node.yaml"),
        "--log-json",
    ]
    if sys.platform.startswith("linux"):
        launcher = [sys.executable, "-c", _STOP_WITH_PARENT, str(os.getpid())]
        command = [*launcher, *command[1:]]
    return subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# Runs in the node's process before it becomes the node: ask Linux for SIGTERM
# when the demo dies, even by kill -9 (the request survives exec), so no node
# is left running on a folder the next demo deletes; give up if the demo is
# already gone; then exec the node. Not a preexec_fn: that runs Python between
# fork and exec in a process full of gRPC threads, and gRPC's fork handlers
# abort the child there.
_STOP_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"libc.prctl({PR_SET_PDEATHSIG}, int(signal.SIGTERM))\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _wait_healthy(nodes) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for node in nodes:
        channel = grpc.insecure_channel(node.local_address)
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if node.process.poll() is not None:
                raise GuantongError(
                    f"node {node.node_id} exited with code {node.process.returncode}; "
                    f"see {node.folder / 'node.log'}"
                )
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise GuantongError(
                    f"node {node.node_id} did not start; see {node.folder / 'node.log'}"
                )
            time.sleep(0.1)
        channel.close()


def _wait_settled(stubs: dict[str, api_grpc.LocalStub]) -> None:
    """Until no node has anything pending for any peer."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        pending = {
            f"{node}->{peer.node}": peer.pending
            for node, stub in stubs.items()
            for peer in stub.Status(api.StatusRequest(), timeout=10).peers
            if peer.pending
        }
        if not pending:
            return
        if time.monotonic() > deadline:
            raise GuantongError(
                f"delivery did not settle in {SETTLE_TIMEOUT_S:.0f} s: {pending}"
            )
        time.sleep(0.2)


def _summarise(
    records: list[dict[str, Any]], stubs: dict[str, api_grpc.LocalStub]
) -> dict[str, dict[str, Any]]:
    received: dict[tuple[str, str], list[str]] = {}
    for node, stub in stubs.items():
        after = 0
        while True:
            page = stub.Inbox(
                api.InboxRequest(after_seq=after, limit=500), timeout=30
            ).messages
            if not page:
                break
            for message in page:
                key = (message.envelope.origin_node, message.envelope.ref)
                received.setdefault(key, []).append(node)
                after = message.seq

    summary: dict[str, dict[str, Any]] = {}
    for data in records:
        origin, ref = data["node"], data["ref"]
        delivery = stubs[origin].Delivery(api.DeliveryRequest(ref=ref), timeout=30)
        summary[ref] = {
            "origin": origin,
            "kind": data["kind"],
            "received_by": sorted(received.get((origin, ref), [])),
            "kept_back": {
                d.node: f"{d.rule}: {d.reason}"
                for d in delivery.destinations
                if not d.allowed
            },
            "withheld": {
                d.node: list(d.withheld_fields)
                for d in delivery.destinations
                if d.withheld_fields
            },
        }
    return summary


def _supersede_statement(
    records: list[dict[str, Any]], stubs: dict[str, api_grpc.LocalStub]
) -> list[str]:
    """Supersede the sample's first statement; lines saying where each version
    went and how each receiver of the old one shows it. Nothing when the
    records file has no such statement."""
    old = SUPERSEDING["supersedes"]
    origin = SUPERSEDING["node"]
    if not any(r.get("ref") == old and r.get("node") == origin for r in records):
        return []
    ref, record = record_from_json(SUPERSEDING, origin)
    stubs[origin].Publish(api.PublishRequest(ref=ref, record=record), timeout=30)
    _wait_settled(stubs)

    lines = [f"{ref} ({origin}) supersedes {old}:"]
    holders: list[str] = []
    for shown_ref in (old, ref):
        shown = stubs[origin].Show(api.ShowRequest(ref=shown_ref), timeout=30)
        for version in shown.versions:
            went = [
                d.node for d in version.destinations if d.delivery_state == DELIVERED
            ]
            nodes = ", ".join(went) or "nobody"
            lines.append(f"    {shown_ref} v{version.version} went to {nodes}")
            if shown_ref == old:
                holders.extend(went)

    unmarked = []
    for node in [origin, *sorted(set(holders))]:
        request = api.ShowRequest(ref=old, origin=origin)
        by = stubs[node].Show(request, timeout=30).superseded_by
        mark = f"{SUPERSEDED_LABEL} by {by}" if by else "NOT marked superseded"
        lines.append(f"    on {node}: {old} {mark}")
        if not by:
            unmarked.append(node)
    if unmarked:
        nodes = ", ".join(unmarked)
        raise GuantongError(f"{old} is not shown as superseded on {nodes}")
    lines.append("")
    return lines


def _request_lifecycle(
    records: list[dict[str, Any]], nodes: dict[str, DemoNode]
) -> list[str]:
    """Take the sample's drill request through its lifecycle: the handler
    acknowledges, accepts and reports the result, the requester closes. Lines
    with each state as both nodes show it; nothing when the records file has
    no such request."""
    requester, ref = LIFECYCLE_REQUEST
    found = [r for r in records if (r.get("node"), r.get("ref")) == LIFECYCLE_REQUEST]
    if not found:
        return []
    handler, subject = found[0]["to"], f"{requester}/{ref}"
    flows = {
        node: wf_grpc.WorkflowStub(grpc.insecure_channel(nodes[node].local_address))
        for node in (requester, handler)
    }
    steps = [
        (handler, pb.ACTION_ACKNOWLEDGE, "已签收，安排核查"),
        (handler, pb.ACTION_ACCEPT, ""),
        (
            handler,
            pb.ACTION_REPORT_RESULT,
            "【演练】维保单位资质齐全，已要求其配合排查。",
        ),
        (requester, pb.ACTION_CLOSE, "感谢协助"),
    ]

    lines = [f"{subject} ({requester} asks {handler}) through its lifecycle:"]
    lines.append(f"    published -> {_request_states(flows, subject)}")
    for node, action, text in steps:
        moved = flows[node].Transition(
            wf.TransitionRequest(request=subject, action=action, text=text), timeout=30
        )
        _wait_for_request_state(flows, subject, moved.request.state)
        step = f"{node} {action_from_pb(action).label}"
        lines.append(f"    {step} -> {_request_states(flows, subject)}")
    lines.append("")
    return lines


def _request_states(flows: dict[str, wf_grpc.WorkflowStub], subject: str) -> str:
    return " · ".join(
        f"on {node}: {_request_view(stub, subject).state_label}"
        for node, stub in flows.items()
    )


def _wait_for_request_state(
    flows: dict[str, wf_grpc.WorkflowStub], subject: str, state: int
) -> None:
    """Until every node shows the request in ``state``."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        states = {node: _request_view(flows[node], subject).state for node in flows}
        if all(shown == state for shown in states.values()):
            return
        if time.monotonic() > deadline:
            wanted = wf.RequestState.Name(state)
            raise GuantongError(f"{subject} is not {wanted} everywhere: {states}")
        time.sleep(0.1)


def _request_view(stub: wf_grpc.WorkflowStub, subject: str) -> wf.RequestView:
    listed = stub.ListRequests(wf.ListRequestsRequest(include_closed=True), timeout=30)
    found = [view for view in listed.requests if view.subject_id == subject]
    return found[0] if found else wf.RequestView()


def _print_summary(
    summary: dict[str, dict[str, Any]], out: Callable[[str], None]
) -> None:
    out("")
    for ref, entry in summary.items():
        receivers = ", ".join(entry["received_by"]) or "nobody"
        out(f"{ref} ({entry['kind']} from {entry['origin']}) -> {receivers}")
        for node, fields in entry["withheld"].items():
            out(f"    {node} received it without: {', '.join(fields)}")
        for node, why in sorted(entry["kept_back"].items()):
            out(f"    not {node}: {why}")
    out("")


def _stop_all(nodes) -> None:
    running = [n for n in nodes if n.process is not None and n.process.poll() is None]
    for node in running:
        node.process.send_signal(signal.SIGTERM)
    for node in running:
        try:
            node.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
