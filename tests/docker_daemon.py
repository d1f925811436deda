"""A private Docker daemon for the tests, and the local images they use.

The daemon gets its own socket, data root, exec root and pid file under a
temporary directory, and flags that leave the machine's network alone (no
bridge, no iptables or masquerading rules). It is stopped by its PID, and so
is the containerd it starts, whatever happens to the tests.

No registry is reachable here, so the images are built from Debian's static
busybox and imported (`docker import`): `local/busybox:1` runs a shell, and
`local/echo-args:1` has an entrypoint that prints its arguments and then
sleeps (for the seed examples, whose Entrypoint is null).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
IMAGE = "local/busybox:1"
ECHO_IMAGE = "local/echo-args:1"
START_TIMEOUT = 30.0


class DaemonUnavailable(RuntimeError):
    """No private Docker daemon could start here; the message says why."""


@dataclass
class PrivateDockerd:
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def containers(self) -> list[str]:
        """Names of every container on this daemon, running or not."""
        import docker

        client = docker.DockerClient(base_url=self.host)
        try:
            return [container.name for container in client.containers.list(all=True)]
        finally:
            client.close()

    def stop(self) -> None:
        """Stop dockerd and its containerd by PID, then remove its files."""
        containerd = _read_pid(self.root / "exec" / "containerd" / "containerd.pid")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if containerd is not None and _alive(containerd):
            os.kill(containerd, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(containerd) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(containerd):
                os.kill(containerd, signal.SIGKILL)
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def start_dockerd() -> PrivateDockerd:
    """A private daemon with the test images, or DaemonUnavailable saying why."""
    if os.geteuid() != 0:
        raise DaemonUnavailable("a private Docker daemon needs root here (run the tests as root)")
    if shutil.which("dockerd") is None:
        raise DaemonUnavailable("dockerd is not installed; run scripts/setup_docker.sh (make test does)")
    if not BUSYBOX.is_file():
        raise DaemonUnavailable("/bin/busybox is missing; run scripts/setup_docker.sh (make test does)")
    reasons = []
    for driver in ("overlay2", "vfs"):
        root = Path(tempfile.mkdtemp(prefix="p2pd-", dir="/tmp"))  # short: a socket path has 108 bytes
        daemon = _launch(root, driver)
        try:
            _wait_ready(daemon)
            _build_images(daemon)
            return daemon
        except DaemonUnavailable as error:
            reasons.append(f"{driver}: {error}")
            daemon.stop()
    raise DaemonUnavailable("; ".join(reasons))


def _launch(root: Path, driver: str) -> PrivateDockerd:
    command = [
        "dockerd",
        "--host", f"unix://{root / 'docker.sock'}",
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "docker.pid"),
        "--storage-driver", driver,
        "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
    ]
    log = open(root / "dockerd.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return PrivateDockerd(root, process)


def _wait_ready(daemon: PrivateDockerd) -> None:
    import docker

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise DaemonUnavailable(f"dockerd exited with {daemon.process.returncode}: {_tail(daemon)}")
        if (daemon.root / "docker.sock").exists():
            client = docker.DockerClient(base_url=daemon.host, timeout=5)
            try:
                client.ping()
                return
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            finally:
                client.close()
        time.sleep(0.1)
    raise DaemonUnavailable(f"dockerd did not answer within {START_TIMEOUT:.0f} s: {_tail(daemon)}")


def _build_images(daemon: PrivateDockerd) -> None:
    import docker

    client = docker.DockerClient(base_url=daemon.host, timeout=120)
    try:
        rootfs = _busybox_rootfs()
        repository, tag = IMAGE.split(":")
        client.api.import_image_from_data(rootfs, repository=repository, tag=tag,
                                          changes=['CMD ["sh"]', "ENV PATH=/bin"])
        repository, tag = ECHO_IMAGE.split(":")
        entrypoint = '["sh", "-c", "echo \\"$@\\"; exec sleep 3600", "echo-args"]'
        client.api.import_image_from_data(rootfs, repository=repository, tag=tag,
                                          changes=[f"ENTRYPOINT {entrypoint}", "ENV PATH=/bin"])
        client.images.get(IMAGE)
        client.images.get(ECHO_IMAGE)
    except docker.errors.DockerException as error:
        raise DaemonUnavailable(f"could not build the test images: {error}") from error
    finally:
        client.close()


def _busybox_rootfs() -> bytes:
    """A tar of a root file system: busybox, a link per applet, /tmp, /etc."""
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
    return buffer.getvalue()


def _tail(daemon: PrivateDockerd) -> str:
    try:
        lines = (daemon.root / "dockerd.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(lines[-3:])


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers; it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def _unmount_under(root: Path) -> None:
    """Unmount whatever the daemon left mounted under its root (a crash can)."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mount in sorted((m for m in mounts if m.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
