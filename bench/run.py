"""Measure publish and delivery throughput, and read them against baselines.

``make bench`` (or ``python -m bench.run --records N``) runs, on this machine:

- baseline ``sqlite_single_txn``: one-row transactions through SQLAlchemy Core
  into a WAL, synchronous=FULL SQLite file — the ceiling for a publish, which
  is one transaction;
- baseline ``sqlite_grouped``: the same rows in transactions of 100 — the
  ceiling for a receiver storing a batch;
- baseline ``grpc_mtls_batches``: envelopes of the same size pushed in batches
  of 100 over mutual TLS to a server that only answers — the transport ceiling;
- ``publish``: incidents published one by one through a node's local API;
- ``drain``: a backlog of the same incidents delivered to a peer that was down.

Figures are printed with their ratio to the baseline they are read against,
with the machine noted; nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import sqlalchemy as sa
from guantong.v1 import local_pb2 as api
from guantong.v1 import local_pb2_grpc as api_grpc

from gateway.identity import (
    TlsFiles,
    init_ca,
    issue_node_cert,
    secure_channel,
    server_credentials,
)
from node.app import Node
from node.config import NodeConfig
from node.logs import configure
from node.record_json import record_from_json

ROOT = Path(__file__).resolve().parent.parent
BATCH = 100


def incident(i: int) -> dict:
    return {
        "ref": f"BENCH-{i:06d}",
        "kind": "incident",
        "title": f"基准测试事件 {i}",
        "summary": "某连锁餐饮品牌门店后厨卫生问题被曝光，涉及多个区的门店。" * 2,
        "category": "food_drug_safety",
        "level": 2,
        "phase": "developing",
        "regions": ["420000", "420100"],
        "entities": ["某餐饮管理有限公司"],
        "platforms": [
            {"name": "微博", "views": 100000, "reposts": 2000, "comments": 900}
        ],
        "keywords": ["食品安全", "后厨"],
        "first_seen": "2025-07-01T08:00:00+08:00",
    }


def machine() -> str:
    model = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def sqlite_rows_per_s(folder: Path, count: int, group: int) -> float:
    engine = sa.create_engine(f"sqlite:///{folder / f'baseline-{group}.db'}")
    with engine.begin() as c:
        c.exec_driver_sql("PRAGMA journal_mode=WAL")
    metadata = sa.MetaData()
    table = sa.Table(
        "rows",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.LargeBinary),
    )
    metadata.create_all(engine)
    body = b"x" * 600
    started = time.perf_counter()
    for start in range(0, count, group):
        with engine.begin() as c:
            c.exec_driver_sql("PRAGMA synchronous=FULL")
            c.execute(sa.insert(table), [{"body": body}] * min(group, count - start))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def grpc_batches_per_s(certs: Path, count: int) -> float:
    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"ok"

    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Sink", {"Push": grpc.unary_unary_rpc_method_handler(answer)}
            ),
        )
    )
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(TlsFiles.for_node(certs, "CN-HN"))
    )
    server.start()
    channel = secure_channel(
        f"127.0.0.1:{port}", TlsFiles.for_node(certs, "CN-HB"), "CN-HN"
    )
    push = channel.unary_unary("/bench.Sink/Push")
    payload = b"x" * 700 * BATCH
    started = time.perf_counter()
    for _ in range(0, count, BATCH):
        push(payload, timeout=10)
    elapsed = time.perf_counter() - started
    channel.close()
    server.stop(0)
    return count / elapsed


def node(node_id: str, peer: str, folder: Path, certs: Path, peer_address: str) -> Node:
    config = NodeConfig.model_validate(
        {
            "node_id": node_id,
            "data_dir": folder / node_id,
            "policies": ROOT / "policies",
            "tls": {
                "ca": certs / "ca.pem",
                "cert": certs / node_id / "node.pem",
                "key": certs / node_id / "node.key",
            },
            "peers": {peer: {"address": peer_address}},
            "delivery": {"initial_backoff_ms": 50, "max_backoff_s": 0.2},
        }
    )
    started = Node(config)
    started.start()
    return started


def exchange(folder: Path, certs: Path, count: int) -> tuple[float, float]:
    """(publishes per second, records delivered per second from a backlog)."""
    hb = node("CN-HB", "CN-HN", folder, certs, "127.0.0.1:1")
    stub = api_grpc.LocalStub(grpc.insecure_channel(hb.local_address))
    requests = [
        api.PublishRequest(ref=ref, record=record)
        for ref, record in (
            record_from_json(incident(i), "CN-HB") for i in range(count)
        )
    ]
    started = time.perf_counter()
    for request in requests:
        stub.Publish(request, timeout=30)
    publish_rate = count / (time.perf_counter() - started)

    hn = node("CN-HN", "CN-HB", folder, certs, hb.federation_address)
    started = time.perf_counter()
    hb.set_peer_address("CN-HN", hn.federation_address)
    while hn.store.log_counts()[1] < count:
        time.sleep(0.01)
    drain_rate = count / (time.perf_counter() - started)
    hb.stop(1)
    hn.stop(1)
    return publish_rate, drain_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench.json")
    args = parser.parse_args()
    # The drain phase backs off against a peer that is down on purpose.
    configure("error")

    with tempfile.TemporaryDirectory(prefix="guantong-bench-") as tmp:
        folder = Path(tmp)
        certs = folder / "certs"
        init_ca(certs)
        for node_id in ("CN-HB", "CN-HN"):
            issue_node_cert(certs, node_id)

        rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        single = sqlite_rows_per_s(folder, min(args.records, 2000), 1)
        grouped = sqlite_rows_per_s(folder, args.records, BATCH)
        transport = grpc_batches_per_s(certs, args.records * 5)
        publish_rate, drain_rate = exchange(folder, certs, args.records)
        rss_after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    drain_ceiling = min(grouped, transport)
    results = {
        "machine": machine(),
        "records": args.records,
        "baseline_sqlite_single_txn_per_s": round(single),
        "baseline_sqlite_grouped_rows_per_s": round(grouped),
        "baseline_grpc_mtls_batched_records_per_s": round(transport),
        "publish_per_s": round(publish_rate),
        "publish_vs_sqlite_single_txn": round(publish_rate / single, 3),
        "drain_per_s": round(drain_rate),
        "drain_vs_min_of_grouped_sqlite_and_grpc": round(drain_rate / drain_ceiling, 3),
        "peak_rss_growth_mib": round((rss_after_kb - rss_before_kb) / 1024, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
