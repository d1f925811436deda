"""The node's settings: defaults, a YAML file, environment variables, flags.

Every setting has one property name in the reference's style
(`Node.Compute.JobSelection.Locality`), and it is spelt the same way in each
source:

- the config file nests it: ``Node: {Compute: {JobSelection: {Locality: local}}}``
  (keys match whatever their letter case);
- the environment names it ``P2PNODE_`` + the path upper-cased, dots turned to
  underscores: ``P2PNODE_NODE_COMPUTE_JOBSELECTION_LOCALITY=local``. Lists are
  comma-separated (``P2PNODE_NODE_NETWORK_PEERS=/ip4/…,/ip4/…``), labels are
  ``k=v,k2=v2``, booleans are true/false, yes/no, on/off or 1/0;
- the `serve` command's flags map onto properties through `FLAG_TO_PROPERTY`.

A property set in a stronger source replaces it whole (labels and lists are
not merged): flags beat the environment, which beats the file, which beats the
defaults. A bad value is a `ConfigError` naming the property, where the value
came from, and what to write instead.

Length: ≈650 lines, because the property table is one row per setting of the
node and each kind of value has its parser here; splitting it would scatter
one table.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import platform
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from p2pnode.lazy import lazy_import
from protocols import units

if TYPE_CHECKING:  # the protocol's models load with the node, not with `p2pnode --help`
    from protocols.jobspec import JobDefaults
    from protocols.messages import Capacity, Locality
    from protocols.node import NodeConfig
    from protocols.selection import SelectionPolicy

yaml = lazy_import("yaml")

log = logging.getLogger("p2pnode.config")

ENV_PREFIX = "P2PNODE_"
DEFAULT_DATA_DIR = Path("~/.p2pnode")
MACHINE_SHARE = 0.8  # of cores, memory and free disk the node offers by default
KNOWN_ENGINES = ("wasm", "docker")
KNOWN_PUBLISHERS = ("local", "ipfs", "s3")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_MAX_TOTAL_TIMEOUT = 86400  # seconds: a day; Node.Compute.JobSelection.MaxTotalTimeout


class ConfigError(ValueError):
    """A setting is missing, malformed or unknown; the message says how to fix it."""


@dataclass(frozen=True)
class NodeSettings:
    """Everything `serve` needs to run one node. `capacity=None` means "most
    of this machine" (see `machine_capacity`), filled in on creation."""

    data_dir: Path
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    peers: tuple[str, ...] = ()  # bootstrap multiaddrs
    mdns: bool = False
    api_host: str = "127.0.0.1"
    api_port: int = 1234  # 0 picks a free port
    labels: Mapping[str, str] = field(default_factory=dict)
    engines: tuple[str, ...] = ("wasm", "docker")  # docker only while its daemon answers
    docker_host: str | None = None  # None: DOCKER_HOST, else the default socket
    publishers: tuple[str, ...] = ("local", "ipfs")  # IPFS is embedded in every node
    allowed_local_paths: tuple[str, ...] = ()  # allow-list for localDirectory inputs
    ipfs_connect: str = ""  # an IPFS daemon's HTTP RPC API to use instead of the embedded store
    ipfs_results_pin: float = 7 * 86400.0  # seconds results published to IPFS stay pinned here
    ipfs_cache_quota: int = 10 << 30  # bytes of unpinned blocks (fetched inputs) kept, least recently used dropped first
    ipfs_max_add: int = 64 << 30  # bytes of one file `ipfs add` may stream to the node (the body of POST /ipfs/add)
    ipfs_stream_port: int | None = 0  # TCP port whole DAGs go to our own peers on, encrypted (0: any free; None: bitswap only)
    capacity: Capacity | None = None
    policy: SelectionPolicy = field(default_factory=lambda: _policy())  # noqa: PLW0108 - defined below
    heartbeat_interval: float = 1.0
    log_level: str = "info"
    network_key_file: Path | None = None  # None: an open network, allowed on loopback or with network_open
    network_open: bool = False
    api_token: str | None = None  # required of API clients when set
    api_insecure: bool = False
    api_max_body: int = 4 << 20
    job_defaults: JobDefaults = field(default_factory=lambda: _job_defaults())  # noqa: PLW0108 - defined below
    log_keep_bytes: int = 1 << 20  # of each of stdout and stderr, once an execution ended
    probe_timeout: float = 10.0  # a probe that does not answer declines
    probe_wait_timeout: float = 300.0  # a bid held by "shouldWait" declines after this
    results_retention: float = 7 * 86400.0  # seconds the local publisher keeps results
    results_quota: int = 10 << 30  # bytes of local results kept, oldest expired first
    url_allow_networks: tuple[str, ...] = ()  # non-public networks url inputs may reach anyway
    input_max_bytes: int = 1 << 30  # cap on one url input, and on one S3 input in all
    url_timeout: float = 300.0
    s3_credentials_file: str | None = None  # the AWS chain's defaults apply when unset
    s3_config_file: str | None = None
    s3_profile: str | None = None

    def __post_init__(self) -> None:
        if self.capacity is None:
            object.__setattr__(self, "capacity", machine_capacity(self.data_dir))


# ---------------------------------------------------------------- the properties


class _Invalid(ValueError):
    """A value does not parse; the message says what would."""


@dataclass(frozen=True)
class _Property:
    path: str
    target: str  # a NodeSettings field, or "capacity.<field>" / "policy.<field>"
    parse: Callable[[Any], Any]
    hint: str  # what a good value looks like

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.path.upper().replace(".", "_")


def _text(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _optional_text(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # an empty value turns the setting off
    return _text(value)


def _path(value: Any) -> Path:
    return Path(_text(value)).expanduser()


def _optional_path(value: Any) -> Path | None:
    text = _optional_text(value)
    return None if text is None else Path(text).expanduser()


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)):
        return tuple(_text(item) for item in value)
    raise _Invalid(f"expected a list of strings, got {value!r}")


def _choices(known: tuple[str, ...]) -> Callable[[Any], tuple[str, ...]]:
    def parse(value: Any) -> tuple[str, ...]:
        names = _strings(value)
        for name in names:
            if name not in known:
                raise _Invalid(f"unknown {name!r}{_did_you_mean(name, known)}")
        return tuple(dict.fromkeys(names))

    return parse


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Invalid(f"expected true or false (also yes/no, on/off, 1/0), got {value!r}")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid(f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    raise _Invalid(f"expected a whole number, got {value!r}")


def _port(value: Any) -> int:
    port = _integer(value)
    if not 0 <= port <= 65535:
        raise _Invalid(f"a port is between 0 and 65535, got {port}")
    return port


def _port_or_off(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() == "off":
        return None
    return _port(value)


def _seconds(value: Any) -> float:
    try:
        seconds = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        raise _Invalid(f"expected a number of seconds, got {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise _Invalid(f"expected a positive number of seconds, got {value!r}")
    return seconds


_LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"[^\s,=]*")


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = [(str(key), _scalar_text(item)) for key, item in value.items()]
    else:
        pairs = []
        for item in _strings(value):
            key, equals, label = item.partition("=")
            if not equals:
                raise _Invalid(f"label {item!r} is not of the form key=value")
            pairs.append((key.strip(), label.strip()))
    for key, label in pairs:
        if not _LABEL_KEY.fullmatch(key):
            raise _Invalid(
                f"label key {key!r} must start and end with a letter or digit and hold only letters, digits, '.', '_', '/', '-'"
            )
        if not _LABEL_VALUE.fullmatch(label):
            raise _Invalid(f"label {key}={label!r}: a value holds no spaces, ',' or '='")
    return dict(pairs)


def _scalar_text(value: Any) -> str:
    """A YAML scalar as the text its author wrote (true, not True)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _policy(**settings: Any) -> SelectionPolicy:
    from protocols.selection import SelectionPolicy

    return SelectionPolicy(**{"max_total_timeout": DEFAULT_MAX_TOTAL_TIMEOUT, **settings})


def _job_defaults(**settings: int) -> JobDefaults:
    from protocols.jobspec import JobDefaults

    return JobDefaults(**settings)


def _locality(value: Any) -> Locality:
    from protocols.messages import Locality

    text = _text(value).lower()
    try:
        return Locality(text)
    except ValueError:
        raise _Invalid(f"unknown locality {text!r}{_did_you_mean(text, [m.value for m in Locality])}") from None


def _url(value: Any) -> str | None:
    url = _optional_text(value)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _Invalid(f"expected an http:// or https:// URL, got {url!r}")
    return url


def _unit(parse: Callable[[object], int]) -> Callable[[Any], int]:
    """A `protocols.units` parser, for numbers as YAML gives them too."""

    def parsed(value: Any) -> int:
        if isinstance(value, bool) or value is None:
            raise _Invalid(f"expected an amount, got {value!r}")
        try:
            amount = parse(value)
        except ValueError as error:
            raise _Invalid(str(error).rstrip(".")) from None
        if amount < 0:
            raise _Invalid(f"expected an amount of zero or more, got {value!r}")
        return amount

    return parsed


def _networks(value: Any) -> tuple[str, ...]:
    networks = _strings(value)
    for text in networks:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _Invalid(f"{text!r} is not a network; write it like 127.0.0.0/8 or ::1/128") from None
    return networks


def _log_level(value: Any) -> str:
    level = _text(value).lower()
    if level not in LOG_LEVELS:
        raise _Invalid(f"unknown log level {level!r}{_did_you_mean(level, LOG_LEVELS)}")
    return level


_PROPERTIES = tuple(
    _Property(*row)
    for row in (
        ("Node.DataDir", "data_dir", _path, "a directory path, e.g. ~/.p2pnode"),
        ("Node.Network.Listen", "listen", _strings, "libp2p multiaddrs, e.g. /ip4/0.0.0.0/tcp/4001"),
        ("Node.Network.Peers", "peers", _strings, "bootstrap multiaddrs, e.g. /ip4/10.0.0.2/tcp/4001/p2p/Qm…"),
        ("Node.Network.MDNS", "mdns", _bool, "true or false"),
        ("Node.Network.KeyFile", "network_key_file", _optional_path, "a key file made by `p2pnode network new-key FILE`"),
        ("Node.Network.Open", "network_open", _bool, "true or false"),
        ("Node.API.Host", "api_host", _text, "an address to bind, e.g. 127.0.0.1"),
        ("Node.API.Port", "api_port", _port, "a port number, 0 for any free port"),
        ("Node.API.Auth.Token", "api_token", _optional_text, "a long random string, e.g. from `openssl rand -hex 32`"),
        ("Node.API.Insecure", "api_insecure", _bool, "true or false"),
        ("Node.API.MaxBodySize", "api_max_body", _unit(units.parse_bytes), "an amount like 4Mb"),
        ("Node.Labels", "labels", _labels, "key=value pairs, e.g. region=us-west-2"),
        ("Node.Compute.Engines", "engines", _choices(KNOWN_ENGINES), f"some of {', '.join(KNOWN_ENGINES)}"),
        ("Node.Compute.Docker.Host", "docker_host", _optional_text, "a Docker daemon address, e.g. unix:///var/run/docker.sock"),
        ("Node.Compute.Publishers", "publishers", _choices(KNOWN_PUBLISHERS), f"some of {', '.join(KNOWN_PUBLISHERS)}"),
        ("Node.Compute.AllowedLocalPaths", "allowed_local_paths", _strings, "directory paths, e.g. /data/shared"),
        ("Node.IPFS.Connect", "ipfs_connect", _optional_text, "an IPFS API multiaddr, e.g. /ip4/127.0.0.1/tcp/5001"),
        ("Node.IPFS.ResultsPin", "ipfs_results_pin", _seconds, "seconds results published to IPFS stay pinned, e.g. 604800"),
        ("Node.IPFS.CacheQuota", "ipfs_cache_quota", _unit(units.parse_bytes), "an amount like 10Gb of fetched blocks"),
        ("Node.IPFS.MaxAddSize", "ipfs_max_add", _unit(units.parse_bytes),
         "an amount like 64Gb: the largest file `p2pnode ipfs add` may stream to this node"),
        ("Node.IPFS.StreamPort", "ipfs_stream_port", _port_or_off,
         "a TCP port for whole DAGs to other p2pnode peers (encrypted), 0 for any free port, off for bitswap only"),
        ("Node.Compute.Capacity.CPU", "capacity.cpu", _unit(units.parse_cpu), "cores (2, 0.5) or millicores (500m)"),
        ("Node.Compute.Capacity.Memory", "capacity.memory", _unit(units.parse_bytes), "an amount like 4Gb or 512Mb"),
        ("Node.Compute.Capacity.Disk", "capacity.disk", _unit(units.parse_bytes), "an amount like 100Gb"),
        ("Node.Compute.Capacity.GPU", "capacity.gpu", _unit(units.parse_gpu), "a number of GPUs, e.g. 1"),
        ("Node.Compute.JobSelection.Locality", "policy.locality", _locality, "local or anywhere"),
        ("Node.Compute.JobSelection.ProbeExec", "policy.probe_exec", _optional_text, "a program to run, e.g. /usr/local/bin/probe"),
        ("Node.Compute.JobSelection.ProbeHttp", "policy.probe_http", _url, "a URL, e.g. http://127.0.0.1:9000/probe"),
        ("Node.Compute.JobSelection.RejectStatelessJobs", "policy.reject_stateless", _bool, "true or false"),
        ("Node.Compute.JobSelection.AcceptNetworkedJobs", "policy.accept_networked", _bool, "true or false"),
        ("Node.Compute.JobSelection.MaxTotalTimeout", "policy.max_total_timeout", _integer,
         "whole seconds, e.g. 86400; 0 takes jobs of any length"),
        ("Node.Compute.JobDefaults.CPU", "job_defaults.cpu", _unit(units.parse_cpu), "cores (0.5) or millicores (100m)"),
        ("Node.Compute.JobDefaults.Memory", "job_defaults.memory", _unit(units.parse_bytes), "an amount like 512Mb"),
        ("Node.Compute.JobDefaults.TotalTimeout", "job_defaults.total_timeout", _integer, "whole seconds, e.g. 1800"),
        ("Node.Compute.JobSelection.ProbeTimeout", "probe_timeout", _seconds, "seconds, e.g. 10"),
        ("Node.Compute.JobSelection.ProbeWaitTimeout", "probe_wait_timeout", _seconds, "seconds a held bid waits for the operator, e.g. 300"),
        ("Node.Compute.Logs.KeepBytes", "log_keep_bytes", _unit(units.parse_bytes), "an amount like 1Mb (of stdout and of stderr)"),
        ("Node.Heartbeat.Interval", "heartbeat_interval", _seconds, "seconds, e.g. 1 or 0.5"),
        ("Node.LogLevel", "log_level", _log_level, f"one of {', '.join(LOG_LEVELS)}"),
        ("Node.Compute.Results.Retention", "results_retention", _seconds, "seconds, e.g. 86400 for a day"),
        ("Node.Compute.Results.Quota", "results_quota", _unit(units.parse_bytes), "an amount like 10Gb"),
        ("Node.Compute.URL.AllowNetworks", "url_allow_networks", _networks, "networks, e.g. 127.0.0.0/8,10.0.0.0/8"),
        ("Node.Compute.Inputs.MaxSize", "input_max_bytes", _unit(units.parse_bytes), "an amount like 1Gb"),
        ("Node.Compute.URL.Timeout", "url_timeout", _seconds, "seconds, e.g. 300"),
        ("Node.S3.CredentialsFile", "s3_credentials_file", _optional_text, "an AWS shared credentials file"),
        ("Node.S3.ConfigFile", "s3_config_file", _optional_text, "an AWS config file"),
        ("Node.S3.Profile", "s3_profile", _optional_text, "a profile name in those files"),
    )
)
PROPERTIES: dict[str, _Property] = {prop.path: prop for prop in _PROPERTIES}
ENV_TO_PROPERTY: dict[str, str] = {prop.env: prop.path for prop in _PROPERTIES}
_SECTIONS = frozenset(
    ".".join(parts[:depth]) for parts in (path.split(".") for path in PROPERTIES) for depth in range(1, len(parts))
)

FLAG_TO_PROPERTY: dict[str, str] = {
    "--data-dir": "Node.DataDir",
    "--listen": "Node.Network.Listen",
    "--peer": "Node.Network.Peers",
    "--mdns": "Node.Network.MDNS",
    "--network-key": "Node.Network.KeyFile",
    "--network-open": "Node.Network.Open",
    "--api-host": "Node.API.Host",
    "--api-port": "Node.API.Port",
    "--api-token": "Node.API.Auth.Token",
    "--api-insecure": "Node.API.Insecure",
    "--api-max-body-size": "Node.API.MaxBodySize",
    "--labels": "Node.Labels",
    "--engines": "Node.Compute.Engines",
    "--publishers": "Node.Compute.Publishers",
    "--allowed-local-paths": "Node.Compute.AllowedLocalPaths",
    "--ipfs-connect": "Node.IPFS.Connect",
    "--ipfs-results-pin": "Node.IPFS.ResultsPin",
    "--ipfs-cache-quota": "Node.IPFS.CacheQuota",
    "--ipfs-max-add-size": "Node.IPFS.MaxAddSize",
    "--ipfs-stream-port": "Node.IPFS.StreamPort",
    "--cpu": "Node.Compute.Capacity.CPU",
    "--memory": "Node.Compute.Capacity.Memory",
    "--disk": "Node.Compute.Capacity.Disk",
    "--gpu": "Node.Compute.Capacity.GPU",
    "--job-selection-data-locality": "Node.Compute.JobSelection.Locality",
    "--job-selection-probe-exec": "Node.Compute.JobSelection.ProbeExec",
    "--job-selection-probe-http": "Node.Compute.JobSelection.ProbeHttp",
    "--job-selection-reject-stateless": "Node.Compute.JobSelection.RejectStatelessJobs",
    "--job-selection-accept-networked": "Node.Compute.JobSelection.AcceptNetworkedJobs",
    "--job-selection-max-total-timeout": "Node.Compute.JobSelection.MaxTotalTimeout",
    "--default-cpu": "Node.Compute.JobDefaults.CPU",
    "--default-memory": "Node.Compute.JobDefaults.Memory",
    "--default-total-timeout": "Node.Compute.JobDefaults.TotalTimeout",
    "--job-selection-probe-timeout": "Node.Compute.JobSelection.ProbeTimeout",
    "--job-selection-probe-wait-timeout": "Node.Compute.JobSelection.ProbeWaitTimeout",
    "--logs-keep-bytes": "Node.Compute.Logs.KeepBytes",
    "--heartbeat-interval": "Node.Heartbeat.Interval",
    "--log-level": "Node.LogLevel",
    "--results-retention": "Node.Compute.Results.Retention",
    "--results-quota": "Node.Compute.Results.Quota",
    "--url-allow-networks": "Node.Compute.URL.AllowNetworks",
    "--input-max-size": "Node.Compute.Inputs.MaxSize",
    "--url-timeout": "Node.Compute.URL.Timeout",
    "--s3-credentials-file": "Node.S3.CredentialsFile",
    "--s3-config-file": "Node.S3.ConfigFile",
    "--s3-profile": "Node.S3.Profile",
}
# click names a repeatable option's parameter as it likes: accept those too.
_FLAG_ALIASES = {"--peers": "--peer", "--label": "--labels"}


# ---------------------------------------------------------------- loading


def load_settings(*, config_file: Path | None, env: Mapping[str, str], flags: Mapping[str, object]) -> NodeSettings:
    """Settings from defaults < `config_file` < `env` < `flags`.

    `flags` is keyed by flag (``--api-port``) or by click's parameter name
    (``api_port``); a value of None means "not given"."""
    given: dict[str, tuple[Any, str]] = {}  # property path -> (raw value, where it came from)
    if config_file is not None:
        given.update(_from_file(config_file))
    given.update(_from_env(env))
    given.update(_from_flags(flags))
    values = {path: _parse(PROPERTIES[path], raw, where) for path, (raw, where) in given.items()}
    return _settings(values)


def _parse(prop: _Property, raw: Any, where: str) -> Any:
    try:
        return prop.parse(raw)
    except _Invalid as error:
        raise ConfigError(f"{prop.path} (from {where}): {error}. Set it to {prop.hint}.") from None


def _settings(values: Mapping[str, Any]) -> NodeSettings:
    plain: dict[str, Any] = {}
    capacity: dict[str, int] = {}
    policy: dict[str, Any] = {}
    defaults: dict[str, int] = {}
    for path, value in values.items():
        group, _, name = PROPERTIES[path].target.rpartition(".")
        {"": plain, "capacity": capacity, "policy": policy, "job_defaults": defaults}[group][name] = value
    data_dir = plain.pop("data_dir", DEFAULT_DATA_DIR.expanduser())
    machine = machine_capacity(data_dir)
    return NodeSettings(
        data_dir=data_dir,
        capacity=replace(machine, **capacity),
        policy=_policy(**policy),
        job_defaults=_job_defaults(**defaults),
        **plain,
    )


def _from_file(config_file: Path) -> dict[str, tuple[Any, str]]:
    where = f"config file {config_file}"
    try:
        document = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read the config file {config_file}: {error.strerror or error}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"the config file {config_file} is not valid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(f"the config file {config_file} must be a mapping with a top-level `Node:` key")
    found: dict[str, tuple[Any, str]] = {}
    _walk(document, "", found, where)
    return found


def _walk(node: Mapping[Any, Any], prefix: str, found: dict[str, tuple[Any, str]], where: str) -> None:
    """Collect the properties of a nested mapping, matching keys whatever their case."""
    by_lower = {path.lower(): path for path in PROPERTIES}
    sections = {section.lower(): section for section in _SECTIONS}
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if dotted.lower() in by_lower:
            found[by_lower[dotted.lower()]] = (value, where)
        elif dotted.lower() in sections:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{sections[dotted.lower()]} (from {where}) is a section: give it nested keys, not {value!r}")
            _walk(value, sections[dotted.lower()], found, where)
        else:
            siblings = [name for name in (*PROPERTIES, *_SECTIONS) if name.rpartition(".")[0].lower() == prefix.lower()]
            raise ConfigError(
                f"unknown setting {dotted} (in {where}){_did_you_mean(dotted, siblings or list(PROPERTIES))}; "
                f"known settings: {', '.join(PROPERTIES)}"
            )


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    for name, value in env.items():
        if name in ENV_TO_PROPERTY:
            found[ENV_TO_PROPERTY[name]] = (value, f"environment variable {name}")
        elif name.startswith(ENV_PREFIX + "NODE_"):
            raise ConfigError(
                f"unknown environment variable {name}{_did_you_mean(name, ENV_TO_PROPERTY)}; unset it or fix its name"
            )
    return found


def _from_flags(flags: Mapping[str, object]) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    for name, value in flags.items():
        flag = "--" + name.lstrip("-").replace("_", "-")
        flag = _FLAG_ALIASES.get(flag, flag)
        if flag not in FLAG_TO_PROPERTY:
            raise ConfigError(f"unknown flag {flag}{_did_you_mean(flag, FLAG_TO_PROPERTY)}")
        if value is None:
            continue
        found[FLAG_TO_PROPERTY[flag]] = (value, f"flag {flag}")
    return found


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    import difflib  # here: only a mistyped setting needs it

    candidates = {option.lower(): option for option in known}
    close = difflib.get_close_matches(name.lower(), candidates, n=1, cutoff=0.6)
    return f" (did you mean {candidates[close[0]]}?)" if close else ""


# ---------------------------------------------------------------- exposure


def check_exposure(settings: NodeSettings) -> None:
    """Refuse to run reachable from other machines without the guards an
    operator would expect: a network key for the peers, a token for the API.
    Each refusal says how to set the guard, and how to opt out on purpose."""
    if settings.network_key_file is None and not settings.network_open:
        exposed = [address for address in settings.listen if not _loopback_multiaddr(address)]
        if exposed:
            raise ConfigError(
                f"Node.Network.Listen {exposed[0]} is reachable from other machines and no network key is set, so "
                "anyone who can reach it could join and read every job. Make a key with `p2pnode network new-key "
                "FILE`, copy it to every peer and pass --network-key FILE; or pass --network-open to run an open "
                "network on purpose."
            )
    if settings.api_token is None and not settings.api_insecure and not _loopback_host(settings.api_host):
        raise ConfigError(
            f"Node.API.Host {settings.api_host} is reachable from other machines and no API token is set, so anyone "
            "could submit and stop jobs. Pass --api-token TOKEN (clients then pass --token or set P2PNODE_API_TOKEN); "
            "or pass --api-insecure to serve an open API on purpose."
        )


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _loopback_multiaddr(address: str) -> bool:
    parts = address.split("/")
    return len(parts) > 2 and parts[1] in ("ip4", "ip6") and _loopback_host(parts[2])


# ---------------------------------------------------------------- the machine


def machine_capacity(data_dir: Path) -> Capacity:
    """Most of this machine: `MACHINE_SHARE` of its cores, memory, and of the
    free disk where the node keeps its data. No GPUs unless configured."""
    from protocols.messages import Capacity

    return Capacity(
        cpu=int(_cores() * 1000 * MACHINE_SHARE),
        memory=int(_memory() * MACHINE_SHARE),
        disk=int(_free_disk(data_dir) * MACHINE_SHARE),
        gpu=0,
    )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _memory() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 1 << 30
    try:  # a container's cgroup (v2) limit, when it is lower
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def _free_disk(data_dir: Path) -> int:
    """Free bytes on the file system that holds (or will hold) `data_dir`."""
    place = data_dir.expanduser().absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        return shutil.disk_usage(place).free
    except OSError:
        return 0


def automatic_labels() -> dict[str, str]:
    """The labels every node carries, named as Go names them (linux, amd64)."""
    machine = platform.machine().lower()
    architecture = {"x86_64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386", "armv7l": "arm"}.get(
        machine, machine
    )
    return {"Operating-System": platform.system().lower(), "Architecture": architecture}


# ---------------------------------------------------------------- to the protocol


def node_config(settings: NodeSettings, node_id: str, addresses: tuple[str, ...], s3: bool = False) -> NodeConfig:
    """The protocol's view of this node. Configured labels may override the
    automatic ones (a warning says so)."""
    from protocols.node import NodeConfig

    labels = automatic_labels()
    for key, value in settings.labels.items():
        if key in labels and labels[key] != value:
            log.warning("label %s=%s overrides the automatic %s=%s", key, value, key, labels[key])
        labels[key] = value
    storages = ["inline", "url"]
    if settings.allowed_local_paths:
        storages.append("localDirectory")
    if "ipfs" in settings.publishers:
        storages.append("ipfs")
    publishers = tuple(p for p in settings.publishers if p != "s3")
    if s3:  # only a node with AWS credentials says it has S3 (see storage.s3)
        storages.append("s3")
        publishers += ("s3",)
    return NodeConfig(
        node_id=node_id,
        labels=labels,
        capacity=settings.capacity or machine_capacity(settings.data_dir),
        engines=settings.engines,
        publishers=publishers,
        storages=tuple(storages),
        local_data=settings.allowed_local_paths,
        policy=settings.policy,
        addresses=addresses,
        heartbeat_interval=settings.heartbeat_interval,
        probe_timeout=settings.probe_timeout,
        probe_wait_timeout=settings.probe_wait_timeout,
    )
