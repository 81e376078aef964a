"""``guantong publish | inbox | watch`` against a real node."""

from __future__ import annotations

import json
import threading

import pytest

from node.cli import main
from tests.conftest import SAMPLE, eventually
from tests.helpers import inbox_refs, incident, publish


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def hb(federation):
    return federation.start("CN-HB", ("CN-HN",))


def test_publishing_another_nodes_record_is_refused(hb, capsys):
    # The sample line says "node": "CN-SH"; this node is CN-HB.
    code, _, err = run(
        capsys,
        "publish",
        "--node-address",
        hb.local_address,
        "--file",
        str(SAMPLE),
        "--ref",
        "SH-2025-0315-01",
    )
    assert code == 2
    assert (
        "the record's 'node' says CN-SH, but the node at" in err and "is CN-HB" in err
    )
    assert hb.store.log_counts()[0] == 0


def test_origin_flag_must_name_the_node_itself(hb, capsys):
    argv = [
        "publish",
        "--node-address",
        hb.local_address,
        "--ref",
        "HB-1",
        "--title",
        "电梯故障",
        "--category",
        "special_equipment",
        "--level",
        "3",
        "--region",
        "420100",
    ]
    code, _, err = run(capsys, *argv, "--origin", "CN-HN")
    assert code == 2 and "--origin says CN-HN" in err

    code, out, _ = run(capsys, *argv)
    assert code == 0 and "published CN-HB/HB-1 version 1" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [("[1, 2]", "a record is a JSON object, not list"), ("{broken", "not valid JSON")],
)
def test_record_file_that_is_not_a_record_is_named(
    hb, capsys, tmp_path, content, message
):
    path = tmp_path / "record.json"
    path.write_text(content)
    code, _, err = run(
        capsys, "publish", "--node-address", hb.local_address, "--file", str(path)
    )
    assert code == 2 and str(path) in err and message in err


def test_jsonl_without_ref_asks_for_one(hb, capsys):
    code, _, err = run(
        capsys, "publish", "--node-address", hb.local_address, "--file", str(SAMPLE)
    )
    assert code == 2 and "pick one with --ref" in err


def test_negative_inbox_arguments_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["inbox", "--after", "-1"])
    assert exited.value.code == 2
    assert "-1 is negative" in capsys.readouterr().err


def test_unreachable_node_gets_a_hint_not_a_traceback(capsys):
    code, _, err = run(capsys, "status", "--node-address", "127.0.0.1:1")
    assert code == 2 and "UNAVAILABLE" in err and "--node-address" in err


def test_inbox_says_when_there_may_be_more(federation, capsys):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    for i in range(3):
        publish(hb, incident(f"HB-{i}"))
    eventually(lambda: len(inbox_refs(hn)) == 3)

    code, out, _ = run(
        capsys, "inbox", "--node-address", hn.local_address, "--limit", "2"
    )
    assert code == 0 and "there is more: guantong inbox --after" in out
    code, out, _ = run(capsys, "inbox", "--node-address", hn.local_address, "--json")
    assert [json.loads(line)["envelope"]["ref"] for line in out.splitlines()] == [
        "HB-0",
        "HB-1",
        "HB-2",
    ]


def test_watch_resumes_after_the_node_restarts(federation, capsys):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",), local_api={"listen": "127.0.0.1:0"})
    publish(hb, incident("HB-0"))
    eventually(lambda: inbox_refs(hn) == ["HB-0"])

    # Pin the local port so the restarted node comes back where watch looks.
    port = hn.local_port
    lines: list[str] = []
    done = threading.Event()

    def watch() -> None:
        import argparse

        from node.cli import client

        parser = argparse.ArgumentParser()
        client.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(
            ["watch", "--node-address", f"127.0.0.1:{port}", "--json"]
        )
        original_print = client.print_message

        def record(message, as_json):
            lines.append(message.envelope.ref)
            if len(lines) == 2:
                done.set()
                raise KeyboardInterrupt

        client.print_message = record
        try:
            client._watch(args)
        finally:
            client.print_message = original_print

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    eventually(lambda: lines == ["HB-0"])

    federation.stop("CN-HN")
    federation.start("CN-HN", ("CN-HB",), local_api={"listen": f"127.0.0.1:{port}"})
    publish(hb, incident("HB-1"))
    assert done.wait(30)
    assert lines == ["HB-0", "HB-1"]
