"""Node settings: flags beat the environment beat the file beat defaults, bad
values name their property and source, and the protocol config gets the
automatic labels."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import pytest

from p2pnode.config import (
    DEFAULT_MAX_TOTAL_TIMEOUT,
    ENV_PREFIX,
    FLAG_TO_PROPERTY,
    PROPERTIES,
    ConfigError,
    NodeSettings,
    automatic_labels,
    load_settings,
    node_config,
)
from protocols.jobspec import JobDefaults
from protocols.messages import Capacity, Locality
from protocols.selection import SelectionPolicy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, file_text: str | None = None, env: dict[str, str] | None = None, **flags: Any) -> NodeSettings:
    config_file = write(tmp_path, file_text) if file_text is not None else None
    return load_settings(config_file=config_file, env=env or {}, flags={"data_dir": tmp_path / "data", **flags})


# ---------------------------------------------------------------- precedence

FILE = """
Node:
  API: {Port: 2000}
  Labels: {region: file}
  Network:
    Peers: [/ip4/10.0.0.1/tcp/1]
  Compute:
    Capacity: {CPU: 500m, Memory: 1Gb}
    JobSelection:
      Locality: local
      AcceptNetworkedJobs: true
      ProbeHttp: http://file.example/probe
"""
ENV = {
    "P2PNODE_NODE_API_PORT": "3000",
    "P2PNODE_NODE_LABELS": "region=env,tier=gold",
    "P2PNODE_NODE_NETWORK_PEERS": "/ip4/10.0.0.2/tcp/2,/ip4/10.0.0.3/tcp/3",
    "P2PNODE_NODE_COMPUTE_CAPACITY_CPU": "2",
    "P2PNODE_NODE_COMPUTE_JOBSELECTION_LOCALITY": "anywhere",
    "P2PNODE_NODE_COMPUTE_JOBSELECTION_ACCEPTNETWORKEDJOBS": "no",
}
FLAGS: dict[str, Any] = {
    "api_port": 4000,
    "labels": ("region=flag",),
    "peers": ("/ip4/10.0.0.4/tcp/4",),
    "job_selection_data_locality": "local",
    "job_selection_accept_networked": True,
}


def observed(settings: NodeSettings) -> dict[str, Any]:
    assert settings.capacity is not None
    return {
        "port": settings.api_port,
        "labels": dict(settings.labels),
        "peers": settings.peers,
        "cpu": settings.capacity.cpu,
        "locality": settings.policy.locality,
        "networked": settings.policy.accept_networked,
        "probe_http": settings.policy.probe_http,
    }


def test_each_source_beats_the_one_before(tmp_path: Path) -> None:
    defaults = observed(load(tmp_path))
    from_file = observed(load(tmp_path, FILE))
    from_env = observed(load(tmp_path, FILE, ENV))
    from_flags = observed(load(tmp_path, FILE, ENV, **FLAGS))

    assert (defaults["port"], from_file["port"], from_env["port"], from_flags["port"]) == (1234, 2000, 3000, 4000)
    assert [d["labels"] for d in (defaults, from_file, from_env, from_flags)] == [
        {}, {"region": "file"}, {"region": "env", "tier": "gold"}, {"region": "flag"},
    ]  # fmt: skip
    assert [d["peers"] for d in (defaults, from_file, from_env, from_flags)] == [
        (), ("/ip4/10.0.0.1/tcp/1",), ("/ip4/10.0.0.2/tcp/2", "/ip4/10.0.0.3/tcp/3"), ("/ip4/10.0.0.4/tcp/4",),
    ]  # fmt: skip
    assert [d["locality"] for d in (defaults, from_file, from_env, from_flags)] == [
        Locality.ANYWHERE, Locality.LOCAL, Locality.ANYWHERE, Locality.LOCAL,
    ]  # fmt: skip
    assert [d["networked"] for d in (defaults, from_file, from_env, from_flags)] == [False, True, False, True]
    # a property set only lower down keeps its value through the stronger sources
    assert [d["probe_http"] for d in (defaults, from_file, from_env, from_flags)] == [
        None, *["http://file.example/probe"] * 3,
    ]  # fmt: skip
    assert (from_file["cpu"], from_env["cpu"], from_flags["cpu"]) == (500, 2000, 2000)


def test_a_file_sets_every_job_selection_property(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
Node:
  Compute:
    JobSelection:
      Locality: local
      ProbeExec: /usr/local/bin/probe
      ProbeHttp: http://127.0.0.1:9000/probe
      RejectStatelessJobs: true
      AcceptNetworkedJobs: true
      MaxTotalTimeout: 3600
    JobDefaults: {CPU: 250m, Memory: 1Gb, TotalTimeout: 60}
  Labels: {region: us-west-2}
""",
    )
    assert settings.policy == SelectionPolicy(
        Locality.LOCAL, "/usr/local/bin/probe", "http://127.0.0.1:9000/probe", True, True, 3600
    )
    assert settings.job_defaults == JobDefaults(cpu=250, memory=1 << 30, total_timeout=60)
    assert settings.labels == {"region": "us-west-2"}


def test_a_node_caps_job_length_and_fills_job_defaults_unless_told_otherwise(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.policy.max_total_timeout == DEFAULT_MAX_TOTAL_TIMEOUT
    assert settings.job_defaults == JobDefaults()


def test_file_keys_match_whatever_their_case_and_sections_may_be_empty(tmp_path: Path) -> None:
    settings = load(tmp_path, "node:\n  api: {port: 0}\n  network:\n  heartbeat: {interval: 0.5}\n")
    assert (settings.api_port, settings.heartbeat_interval) == (0, 0.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("yes", True), ("no", False), ("true", True), ("False", False), ("1", True), ("0", False), ("on", True)],
)
def test_booleans_from_the_environment(tmp_path: Path, text: str, expected: bool) -> None:
    settings = load(tmp_path, env={"P2PNODE_NODE_COMPUTE_JOBSELECTION_REJECTSTATELESSJOBS": text})
    assert settings.policy.reject_stateless is expected


def test_capacity_units_and_data_dir(tmp_path: Path) -> None:
    settings = load_settings(
        config_file=write(tmp_path, "Node:\n  Compute:\n    Capacity: {CPU: 1.5, Memory: 512mb, Disk: 2Gb, GPU: '1'}\n"),
        env={"P2PNODE_NODE_DATADIR": str(tmp_path / "elsewhere")},
        flags={},
    )
    assert settings.capacity == Capacity(cpu=1500, memory=512 << 20, disk=2 << 30, gpu=1)
    assert settings.data_dir == tmp_path / "elsewhere"


def test_flags_are_accepted_by_flag_name_too(tmp_path: Path) -> None:
    settings = load_settings(
        config_file=None, env={}, flags={"--data-dir": tmp_path, "--api-port": 9, "--peer": ("/ip4/1.2.3.4/tcp/5",)}
    )
    assert (settings.data_dir, settings.api_port, settings.peers) == (tmp_path, 9, ("/ip4/1.2.3.4/tcp/5",))


def test_every_flag_maps_to_a_known_property() -> None:
    assert set(FLAG_TO_PROPERTY.values()) <= set(PROPERTIES)
    for flag in (
        "--job-selection-data-locality", "--job-selection-probe-exec", "--job-selection-probe-http",
        "--job-selection-reject-stateless", "--job-selection-accept-networked", "--labels", "--peer",
        "--listen", "--api-port", "--data-dir",
    ):  # fmt: skip
        assert flag in FLAG_TO_PROPERTY


def test_the_serve_command_flags_are_all_understood() -> None:
    from p2pnode.serve_command import serve

    for option in serve.params:
        if option.name != "config_file":
            assert max(option.opts, key=len) in FLAG_TO_PROPERTY, option.opts


def test_environment_names_follow_the_property_paths() -> None:
    assert PROPERTIES["Node.Compute.JobSelection.Locality"].env == "P2PNODE_NODE_COMPUTE_JOBSELECTION_LOCALITY"
    assert all(prop.env.startswith(ENV_PREFIX + "NODE_") for prop in PROPERTIES.values())


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("file_text", "env", "flags", "message"),
    [
        (None, {}, {"job_selection_data_locality": "locl"},
         r"Node\.Compute\.JobSelection\.Locality \(from flag --job-selection-data-locality\): unknown locality 'locl' \(did you mean local\?\)"),
        (None, {"P2PNODE_NODE_COMPUTE_JOBSELECTION_LOCALITY": "nowhere"}, {},
         r"Locality \(from environment variable P2PNODE_NODE_COMPUTE_JOBSELECTION_LOCALITY\).*Set it to local or anywhere"),
        (None, {}, {"labels": ("region",)}, r"Node\.Labels \(from flag --labels\): label 'region' is not of the form key=value"),
        (None, {"P2PNODE_NODE_LABELS": "=x"}, {}, r"Node\.Labels \(from environment variable .*label key ''"),
        ("Node:\n  Labels: {region: us west}\n", {}, {}, r"Node\.Labels \(from config file .*no spaces"),
        ("Node:\n  Compute:\n    Capacity: {Memory: 4 lightyears}\n", {}, {},
         r"Node\.Compute\.Capacity\.Memory \(from config file .*Set it to an amount like 4Gb"),
        (None, {"P2PNODE_NODE_COMPUTE_CAPACITY_CPU": "lots"}, {}, r"Node\.Compute\.Capacity\.CPU \(from environment"),
        ("Node:\n  Compute:\n    JobSelection: {Localty: local}\n", {}, {},
         r"unknown setting Node\.Compute\.JobSelection\.Localty \(in config file .*did you mean Node\.Compute\.JobSelection\.Locality\?"),
        ("Nodes:\n  Labels: {}\n", {}, {}, r"unknown setting Nodes .*did you mean Node\?"),
        ("Node:\n  Compute: local\n", {}, {}, r"Node\.Compute \(from config file .*is a section"),
        (None, {"P2PNODE_NODE_COMPUTE_JOBSELECTION_REJECTSTATELESSJOBS": "maybe"}, {},
         r"RejectStatelessJobs \(from environment variable .*expected true or false"),
        (None, {"P2PNODE_NODE_COMPUTE_JOBSELECTON_LOCALITY": "local"}, {},
         r"unknown environment variable P2PNODE_NODE_COMPUTE_JOBSELECTON_LOCALITY \(did you mean P2PNODE_NODE_COMPUTE_JOBSELECTION_LOCALITY\?\)"),
        (None, {}, {"api_port": 70000}, r"Node\.API\.Port \(from flag --api-port\): a port is between 0 and 65535"),
        (None, {}, {"job_selection_probe_http": "localhost:9000"}, r"ProbeHttp \(from flag .*http:// or https:// URL"),
        ("Node:\n  Heartbeat: {Interval: -1}\n", {}, {}, r"Node\.Heartbeat\.Interval .*positive number of seconds"),
        ("Node:\n  Compute: {Engines: [wasm, dokcer]}\n", {}, {}, r"Engines .*unknown 'dokcer' \(did you mean docker\?\)"),
        (None, {}, {"api-prot": 1}, r"unknown flag --api-prot \(did you mean --api-port\?\)"),
        ("- just\n- a list\n", {}, {}, r"must be a mapping with a top-level `Node:` key"),
        ("Node: {Labels: [unclosed\n", {}, {}, r"is not valid YAML"),
    ],
)  # fmt: skip
def test_bad_values_say_which_property_where_and_how_to_fix(
    tmp_path: Path, file_text: str | None, env: dict[str, str], flags: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, file_text, env, **flags)


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(config_file=tmp_path / "absent.yaml", env={}, flags={})


def test_other_p2pnode_variables_are_left_alone(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"P2PNODE_API": "http://127.0.0.1:1234", "HOME": "/root"})
    assert settings.api_port == 1234


# ---------------------------------------------------------------- defaults and the protocol config


def test_defaults_are_sane_on_this_machine(tmp_path: Path) -> None:
    settings = load_settings(config_file=None, env={}, flags={"data_dir": tmp_path})
    capacity = settings.capacity
    assert capacity is not None
    assert 0 < capacity.cpu <= (os.cpu_count() or 1) * 1000
    assert 0 < capacity.memory < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < capacity.disk < os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert capacity.gpu == 0
    assert settings.listen == ("/ip4/127.0.0.1/tcp/0",)
    assert (settings.api_host, settings.api_port, settings.mdns) == ("127.0.0.1", 1234, False)
    assert (settings.engines, settings.publishers, settings.allowed_local_paths) == (("wasm", "docker"), ("local", "ipfs"), ())
    assert settings.policy == SelectionPolicy(max_total_timeout=DEFAULT_MAX_TOTAL_TIMEOUT)
    assert (settings.heartbeat_interval, settings.log_level) == (1.0, "info")


def test_data_dir_defaults_to_the_home_directory() -> None:
    settings = load_settings(config_file=None, env={}, flags={})
    assert settings.data_dir == Path.home() / ".p2pnode"


def test_automatic_labels_name_the_machine_as_go_does() -> None:
    labels = automatic_labels()
    assert labels["Operating-System"] == platform.system().lower()
    expected = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine().lower())
    assert labels["Architecture"] == expected


def test_node_config_carries_labels_policy_and_derived_storages(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "Node:\n  Compute:\n    AllowedLocalPaths: [/data]\n    Publishers: [local, ipfs]\n"
        "    JobSelection: {Locality: local}\n  Labels: {region: eu}\n",
    )
    config = node_config(settings, "node-1", ("/ip4/127.0.0.1/tcp/4001",))
    assert config.node_id == "node-1"
    assert dict(config.labels) == {**automatic_labels(), "region": "eu"}
    assert set(config.storages) == {"inline", "url", "localDirectory", "ipfs"}
    assert config.local_data == ("/data",)
    assert config.publishers == ("local", "ipfs")
    assert config.policy.locality == Locality.LOCAL
    assert config.capacity == settings.capacity
    assert config.addresses == ("/ip4/127.0.0.1/tcp/4001",)

    plain = node_config(load(tmp_path), "node-2", ())
    assert set(plain.storages) == {"inline", "url", "ipfs"}  # IPFS is embedded by default


def test_a_configured_label_overrides_an_automatic_one_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load(tmp_path, labels=("Architecture=riscv64",))
    with caplog.at_level(logging.WARNING, logger="p2pnode.config"):
        config = node_config(settings, "node-1", ())
    assert config.labels["Architecture"] == "riscv64"
    assert "overrides the automatic Architecture" in caplog.text


def test_the_docker_daemon_address_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    env = {"P2PNODE_NODE_COMPUTE_DOCKER_HOST": "unix:///run/other.sock"}
    assert load_settings(config_file=None, env=env, flags={"data_dir": tmp_path}).docker_host == "unix:///run/other.sock"
    config = tmp_path / "config.yaml"
    config.write_text("Node:\n  Compute:\n    Docker:\n      Host: tcp://127.0.0.1:2375\n")
    assert load_settings(config_file=config, env={}, flags={"data_dir": tmp_path}).docker_host == "tcp://127.0.0.1:2375"
    assert load_settings(config_file=None, env={}, flags={"data_dir": tmp_path}).docker_host is None


@pytest.mark.parametrize(("text", "expected"), [("off", None), ("OFF", None), ("0", 0), ("4002", 4002)])
def test_the_dag_stream_port_is_a_port_or_off(tmp_path: Path, text: str, expected: int | None) -> None:
    settings = load_settings(config_file=None, env={}, flags={"--data-dir": tmp_path, "--ipfs-stream-port": text})
    assert settings.ipfs_stream_port == expected


def test_a_bad_dag_stream_port_says_what_would_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="between 0 and 65535"):
        load_settings(config_file=None, env={}, flags={"--data-dir": tmp_path, "--ipfs-stream-port": "70000"})
