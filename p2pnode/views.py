"""How jobs, executions, history and nodes look to clients: the reference
network's v1 shapes, PascalCase, times in Unix nanoseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from protocols.membership import MemberStatus
from protocols.messages import NodeInfo
from protocols.records import ExecutionRecord, HistoryEvent, JobReplica


OUTPUT_IN_RECORD = 4096  # characters of stdout/stderr the replicated record carries (p2pnode.execution)


def nanos(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def job_view(replica: JobReplica) -> dict[str, Any]:
    header = replica.header
    document = header.spec.to_document()
    document.update(
        ID=header.id,
        Name=header.name,
        State={"StateType": str(header.state), "Message": header.message},
        Version=header.version,
        Revision=header.revision,
        CreateTime=nanos(header.create_time),
        ModifyTime=nanos(header.modify_time),
        Leader=header.leader,
        Epoch=header.epoch,
    )
    for task in document.get("Tasks", ()):
        if isinstance(task.get("Resources"), dict):
            task["Resources"] = _resources_config(task["Resources"])
    return document


def _resources_config(resources: dict[str, Any]) -> dict[str, Any]:
    """A task's resources as the reference's models.ResourcesConfig writes
    them: strings (100m, 64Mb), which parse back to the same amounts."""
    shown = dict(resources)
    for key in ("Memory", "Disk"):
        if isinstance(shown.get(key), int):
            shown[key] = _bytes_text(shown[key])
    if isinstance(shown.get("GPU"), int):
        shown["GPU"] = str(shown["GPU"])
    if isinstance(shown.get("CPU"), int):
        shown["CPU"] = f"{shown['CPU']}m"
    return shown


def _bytes_text(amount: int) -> str:
    for unit, size in (("Tb", 1 << 40), ("Gb", 1 << 30), ("Mb", 1 << 20), ("Kb", 1 << 10)):
        if amount and amount % size == 0:
            return f"{amount // size}{unit}"
    return str(amount)


def execution_view(execution: ExecutionRecord) -> dict[str, Any]:
    result = execution.result
    view: dict[str, Any] = {
        "ID": execution.id,
        "JobID": execution.job_id,
        "NodeID": execution.node_id,
        "PartitionIndex": execution.partition,
        "ComputeState": {"StateType": str(execution.state), "Message": execution.message},
        "DesiredState": {"StateType": str(execution.desired), "Message": ""},
        "Revision": execution.revision,
        "Epoch": execution.epoch,
        "CreateTime": nanos(execution.create_time),
        "ModifyTime": nanos(execution.modify_time),
    }
    if result is not None:
        view["RunOutput"] = {  # the reference's models.RunCommandResult, its lower-case "stderr" too
            "Stdout": result.stdout,
            "stderr": result.stderr,
            "ExitCode": result.exit_code,
            "ErrorMsg": result.error,
            "StdoutTruncated": len(result.stdout) >= OUTPUT_IN_RECORD,
            "StderrTruncated": len(result.stderr) >= OUTPUT_IN_RECORD,
        }
        view["PublishedResult"] = {"Type": result.publisher, "Params": {"Location": result.location}}
    return view


def history_view(job_id: str, event: HistoryEvent) -> dict[str, Any]:
    level = "ExecutionLevel" if event.execution_id else "JobLevel"
    view: dict[str, Any] = {
        "Type": level,
        "JobID": job_id,
        "ExecutionID": event.execution_id,
        "NodeID": event.node_id,
        "Time": datetime.fromtimestamp(event.time, UTC).isoformat().replace("+00:00", "Z"),
        "Event": {"Topic": event.kind, "Message": event.message},
    }
    if event.previous or event.new:
        key = "ExecutionState" if event.execution_id else "JobState"
        view[key] = {"Previous": event.previous, "New": event.new}
    return view


def node_view(info: NodeInfo, status: MemberStatus | None) -> dict[str, Any]:
    connected = status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)
    return {
        "Info": {
            "NodeID": info.node_id,
            "NodeType": "Compute",
            "Labels": dict(info.labels),
            "Version": info.version,
            "BacalhauVersion": {"GitVersion": f"v{info.version}"},
            "Addresses": list(info.addresses),
            "ComputeNodeInfo": {
                "ExecutionEngines": list(info.engines),
                "Publishers": list(info.publishers),
                "StorageSources": list(info.storages),
                "MaxCapacity": _capacity(info.capacity),
                "AvailableCapacity": _capacity(info.free),
            },
        },
        "Membership": "APPROVED",
        "Connection": "CONNECTED" if connected else "DISCONNECTED",
        "Liveness": str(status) if status is not None else "unknown",
    }


def _capacity(capacity: Any) -> dict[str, Any]:
    """The reference's models.Resources: CPU in cores, Memory and Disk in bytes."""
    return {"CPU": capacity.cpu / 1000, "Memory": capacity.memory, "Disk": capacity.disk, "GPU": capacity.gpu}
