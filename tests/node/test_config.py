"""A bad node config stops startup naming the file, line and key."""

from __future__ import annotations

import pytest

from node.config import load_config
from node.errors import ConfigError

GOOD = """\
node_id: CN-HB
data_dir: data
policies: policies
tls:
  ca: certs/ca.pem
  cert: certs/CN-HB/node.pem
  key: certs/CN-HB/node.key
peers:
  CN-HN: {address: "127.0.0.1:7102"}
"""


def write(tmp_path, text):
    for name in ("ca.pem", "CN-HB/node.pem", "CN-HB/node.key"):
        (tmp_path / "certs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "certs" / name).touch()
    (tmp_path / "policies").mkdir(exist_ok=True)
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_loads_with_paths_relative_to_the_file(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.node_id == "CN-HB"
    assert config.tls.ca == tmp_path / "certs" / "ca.pem"
    assert config.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'node.db'}"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (
            lambda t: t.replace("node_id: CN-HB", "node_id: Hubei"),
            ":1: node_id: 'Hubei' is not a node id",
        ),
        (
            lambda t: t.replace("  key: certs/CN-HB/node.key\n", ""),
            ":4: tls.key: is required",
        ),
        (
            lambda t: t.replace('"127.0.0.1:7102"', '"nowhere"'),
            ":9: peers.CN-HN.address:",
        ),
        (lambda t: t + "delivery: {batch_size: 0}\n", ":10: delivery.batch_size:"),
        (lambda t: t + "colour: blue\n", ":10: colour: is not a known key"),
        (
            lambda t: t.replace("peers:", "peers: [").replace("}\n", "}"),
            "not valid YAML",
        ),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path, change, where):
    path = write(tmp_path, change(GOOD))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert where in str(error.value)


def test_missing_tls_file_is_named_with_its_key(tmp_path):
    path = write(tmp_path, GOOD)
    (tmp_path / "certs" / "CN-HB" / "node.key").unlink()
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}:7: tls.key: " in str(error.value)
    assert "node.key does not exist" in str(error.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(tmp_path / "nowhere.yaml")
