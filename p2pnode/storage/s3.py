"""S3 as an input source and as a publisher (boto3).

Credentials come only from the node: the standard AWS chain (environment
variables, shared credentials and config files, a profile) as the operator
set it, optionally pointed at other files by `Node.S3.*`. A job names a
bucket, a key, a region and an endpoint, never a secret. The chain's
network providers (EC2 instance metadata, container credentials) are left
out: a node makes no traffic its operator did not ask for. A node without
credentials does not announce `s3`, so it never bids on S3 jobs, and says why
at start.

Input parameters (the reference's): Bucket, Key (a Key ending in `/` or `*`
is a prefix: every object under it is fetched), Region, Endpoint, VersionID,
ChecksumSHA256 (hex or base64, verified while streaming), Filter (a regular
expression keys must match).

Publisher parameters: Bucket, Key (placeholders {jobID}, {executionID},
{nodeID}, {date}, {time}), Region, Endpoint. The execution's result tree
(stdout, stderr, exitCode, one folder per result path) is uploaded under
Key as a prefix, each object carrying its sha256 in its metadata.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2pnode.storage.paths import UnsafePath, inside, safe_relative

if TYPE_CHECKING:
    from p2pnode.storage.local import FileEntry, Manifest

BLOCK = 1 << 20
# What botocore's credential chain reads from the environment (AWS_CA_BUNDLE,
# AWS_DEFAULT_REGION and such give no credentials).
CHAIN_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_CREDENTIAL_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "BOTO_CONFIG",
)
NO_CREDENTIALS = ("it has no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment, "
                  "or a credentials file (Node.S3.CredentialsFile / --s3-credentials-file)")
SHA_META = "sha256"


class S3Error(Exception):
    """An S3 input or publish failed; the message names the bucket and key."""


@dataclass(frozen=True)
class S3Access:
    """The node's own way into S3 (never the job's)."""

    credentials_file: str | None = None
    config_file: str | None = None
    profile: str | None = None

    def session(self) -> Any:
        import boto3
        import botocore.session

        core = botocore.session.Session(profile=self.profile)
        if self.credentials_file:
            core.set_config_variable("credentials_file", self.credentials_file)
        if self.config_file:
            core.set_config_variable("config_file", self.config_file)
        resolver = core.get_component("credential_provider")
        for network_provider in ("container-role", "iam-role"):
            try:
                resolver.remove(network_provider)
            except Exception:  # noqa: BLE001 - absent in this botocore: nothing to remove
                pass
        return boto3.Session(botocore_session=core)

    def missing(self) -> str | None:
        """Why this node cannot use S3, or None if it has credentials."""
        if not self._anything_to_read():
            return NO_CREDENTIALS
        try:
            credentials = self.session().get_credentials()
        except Exception as error:  # noqa: BLE001 - a broken profile or file: say so
            return f"its AWS credentials cannot be read: {error}"
        if credentials is None:
            return NO_CREDENTIALS
        return None

    def _anything_to_read(self) -> bool:
        """Whether the AWS chain (less instance metadata) has a variable or a
        file to look at. Without one it finds nothing, and the node is spared
        boto3 (≈24 MiB) until a job needs it."""
        if self.credentials_file or self.config_file or self.profile:
            return True
        if any(name in os.environ for name in CHAIN_VARIABLES) or any(name.startswith("AWS_CONTAINER_") for name in os.environ):
            return True
        files = ("~/.aws/credentials", "~/.aws/config", "~/.boto", "/etc/boto.cfg")
        return any(Path(name).expanduser().exists() for name in files)

    def client(self, region: str = "", endpoint: str = "") -> Any:
        from botocore.config import Config

        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60)
        return self.session().client("s3", region_name=region or "us-east-1", endpoint_url=endpoint or None, config=config)


def _failure(what: str, error: Exception) -> S3Error:
    return S3Error(f"{what}: {error}")


# ---------------------------------------------------------------- inputs


def expected_digest(text: str) -> str:
    """A ChecksumSHA256 as hex, from hex or S3's base64."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise S3Error(f"ChecksumSHA256 {text!r} is neither 64 hex digits nor a base64 SHA-256")
    return raw.hex()


def fetch_input(access: S3Access, params: dict[str, Any], destination: Path, max_bytes: int) -> bool:
    """Download the object (or every object under the prefix) to
    `destination`: a file for one object, a folder for a prefix. Returns
    whether it was a prefix. Streams to disk; at most `max_bytes` in all."""
    bucket, key = str(params["Bucket"]), str(params["Key"])
    region, endpoint = str(params.get("Region") or ""), str(params.get("Endpoint") or "")
    checksum = params.get("ChecksumSHA256")
    client = access.client(region, endpoint)
    where = f"s3://{bucket}/{key}"
    if key.endswith(("/", "*")) or key == "":
        if checksum:
            raise S3Error(f"{where}: ChecksumSHA256 checks one object, not a prefix; drop it or name one object")
        prefix = key.rstrip("*")
        pattern = re.compile(str(params["Filter"])) if params.get("Filter") else None
        destination.mkdir(parents=True, exist_ok=True)
        total = 0
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"][len(prefix):].lstrip("/")
                    if not name or name.endswith("/") or (pattern and not pattern.search(item["Key"])):
                        continue
                    try:
                        target = inside(destination, name)
                    except UnsafePath as error:
                        raise S3Error(f"{where}: object {item['Key']!r} cannot be a file name: {error}") from None
                    target.parent.mkdir(parents=True, exist_ok=True)
                    total += _download(client, bucket, item["Key"], None, target, None, max_bytes - total)
        except S3Error:
            raise
        except Exception as error:  # noqa: BLE001 - botocore's errors say what S3 answered
            raise _failure(f"cannot list {where}", error) from None
        return True
    digest = expected_digest(str(checksum)) if checksum else None
    destination.parent.mkdir(parents=True, exist_ok=True)
    _download(client, bucket, key, params.get("VersionID") or None, destination, digest, max_bytes)
    return False


def _download(client: Any, bucket: str, key: str, version: str | None, target: Path,
              digest: str | None, max_bytes: int) -> int:
    where = f"s3://{bucket}/{key}" + (f" (version {version})" if version else "")
    extra = {"VersionId": version} if version else {}
    try:
        answer = client.get_object(Bucket=bucket, Key=key, **extra)
    except Exception as error:  # noqa: BLE001
        raise _failure(f"cannot get {where}", error) from None
    hasher, size = hashlib.sha256(), 0
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as out:
            for block in answer["Body"].iter_chunks(BLOCK):
                size += len(block)
                if size > max_bytes:
                    raise S3Error(f"{where} is over this node's input size cap ({max_bytes} bytes)")
                hasher.update(block)
                out.write(block)
    except S3Error:
        partial.unlink(missing_ok=True)
        raise
    except Exception as error:  # noqa: BLE001
        partial.unlink(missing_ok=True)
        raise _failure(f"cannot read {where}", error) from None
    if digest is not None and hasher.hexdigest() != digest:
        partial.unlink(missing_ok=True)
        raise S3Error(f"checksum mismatch for {where}: ChecksumSHA256 says {digest}, the object's is {hasher.hexdigest()}")
    partial.replace(target)
    return size


# ---------------------------------------------------------------- publisher


def resolve_key(key: str, job_id: str, execution_id: str, node_id: str, now: float | None = None) -> str:
    """The publisher's Key with its placeholders filled, as a prefix."""
    moment = time.gmtime(time.time() if now is None else now)
    for placeholder, value in (("{jobID}", job_id), ("{executionID}", execution_id), ("{nodeID}", node_id),
                               ("{date}", time.strftime("%Y%m%d", moment)), ("{time}", time.strftime("%H%M%S", moment))):
        key = key.replace(placeholder, value)
    return key if key.endswith("/") or not key else key + "/"


def publish(access: S3Access, params: dict[str, Any], prefix: str, files: list[tuple[FileEntry, Path]]) -> str:
    """Upload each result file under `prefix`; the location s3://bucket/prefix."""
    bucket = str(params["Bucket"])
    client = access.client(str(params.get("Region") or ""), str(params.get("Endpoint") or ""))
    for entry, path in files:
        key = prefix + entry.name
        try:
            client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {SHA_META: entry.sha256}})
        except Exception as error:  # noqa: BLE001
            raise _failure(f"cannot upload s3://{bucket}/{key}", error) from None
    return f"s3://{bucket}/{prefix}"


def list_manifest(access: S3Access, location: str, region: str, endpoint: str) -> Manifest:
    """What an s3 publisher put at `location`, read from S3 itself: for a
    node that reaches the bucket when the publishing node is gone."""
    from p2pnode.storage.local import FileEntry, Manifest

    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    client = access.client(region, endpoint)
    entries = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                name = item["Key"][len(prefix):]
                safe_relative(name)
                digest = client.head_object(Bucket=bucket, Key=item["Key"]).get("Metadata", {}).get(SHA_META, "")
                if not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise S3Error(f"s3://{bucket}/{item['Key']} carries no sha256 to check it by")
                entries.append(FileEntry(name, int(item["Size"]), digest))
    except (S3Error, UnsafePath):
        raise
    except Exception as error:  # noqa: BLE001
        raise _failure(f"cannot list {location}", error) from None
    return Manifest("s3", tuple(entries), time.time(), location, region, endpoint)


def read_range(access: S3Access, manifest: Manifest, name: str, offset: int, length: int) -> bytes:
    """Bytes of one published file, read back from S3 by range."""
    safe_relative(name)
    bucket, _, prefix = manifest.location.removeprefix("s3://").partition("/")
    client = access.client(manifest.region, manifest.endpoint)
    try:
        answer = client.get_object(Bucket=bucket, Key=prefix + name, Range=f"bytes={offset}-{offset + length - 1}")
        return answer["Body"].read()
    except Exception as error:  # noqa: BLE001
        raise _failure(f"cannot read s3://{bucket}/{prefix}{name}", error) from None
