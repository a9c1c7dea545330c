"""A real single-node SLURM cluster on localhost runs a small DAG through profiles/slurm.

The test brings up its own munged, slurmctld and slurmd (private socket, ports, state and
logs under temporary directories) and stops them by PID. The DAG is twin -> event index ->
convert -> split -> persistence forecasts -> scores, submitted with `--profile
profiles/slurm` (every job in the container through the stand-in apptainer, as the profile
asks). It is skipped, with the reason, only where the SLURM packages cannot be installed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from workflow_support import (
    REPO,
    container_calls,
    container_env,
    snakemake,
    tiny_config,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "munged")
#: The small DAG: rule -> jobs (each one SLURM job).
DAG_JOBS = {
    "synthesize_sevir": 1,
    "select_events": 1,
    "convert_to_zarr": 4,
    "split_events": 1,
    "predict_model": 1,
    "score_model": 1,
}


def _ensure_slurm() -> None:
    """Install the Debian packages where they are missing (root only), else skip."""
    if all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in BINARIES):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("SLURM packages are not installed and cannot be (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(
            ["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=300
        )
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"SLURM packages could not be installed with apt-get: {exc}")


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 4000


SLURM_CONF = """\
ClusterName=stormfusiontest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
SlurmdParameters=config_overrides
AuthType=auth/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
NodeName=localhost CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


#: Where srun looks for the configuration: the job-step plugin drops SLURM_CONF from the
#: environment of the `srun` inside each batch job, so the test's config is linked here
#: for the duration of the test (one such test at a time, under LOCK).
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
LOCK = Path(tempfile.gettempdir()) / "stormfusion-slurm-test.lock"
MARKER = "ClusterName=stormfusiontest"


class LocalSlurm:
    """munged + slurmctld + slurmd for one test; every daemon stopped by its PID."""

    def __init__(self, root: Path, cpus: int, memory_mb: int) -> None:
        self.root = root
        self.lock = LOCK.open("w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            if MARKER not in SYSTEM_CONF.read_text(errors="replace"):
                self.lock.close()
                pytest.skip(f"{SYSTEM_CONF} belongs to a real SLURM installation; not touched")
            SYSTEM_CONF.unlink()  # left behind by a killed run of this test
        # munged runs as `munge` and must reach its socket: a directory outside pytest's
        # private tmp tree, owned by munge.
        self.munge_dir = Path(tempfile.mkdtemp(prefix="stormfusion-munge-"))
        shutil.chown(self.munge_dir, "munge", "munge")
        self.munge_dir.chmod(0o755)
        self.conf = root / "slurm.conf"
        for sub in ("state", "spool"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            SLURM_CONF.format(
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                munge_socket=self.munge_dir / "munge.socket",
                root=root,
                cpus=cpus,
                memory=memory_mb,
            )
        )
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, cmd: list[str], log: Path) -> None:
        with log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            )

    def start(self, timeout: float = 60) -> None:
        self._start(
            [
                "runuser", "-u", "munge", "--", _sbin("munged"), "--foreground", "--force",
                f"--socket={self.munge_dir / 'munge.socket'}",
                f"--pid-file={self.munge_dir / 'munged.pid'}",
                f"--log-file={self.munge_dir / 'munged.log'}",
                f"--seed-file={self.munge_dir / 'munged.seed'}",
            ],
            self.root / "munged.out",
        )  # fmt: skip
        self._wait(lambda: (self.munge_dir / "munge.socket").exists(), timeout, "munged")
        self._start([_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)], self.root / "ctld.out")
        self._start(
            [_sbin("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)],
            self.root / "slurmd.out",
        )
        self._wait(lambda: self.node_state() == "idle", timeout, "an idle slurmd")

    def node_state(self) -> str:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        raise RuntimeError(f"local SLURM: no {what} within {timeout} s\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for path in [*sorted(self.root.glob("*.out")), *sorted(self.root.glob("*.log"))]:
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True, check=False)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        shutil.rmtree(self.munge_dir, ignore_errors=True)
        if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == self.conf.resolve():
            SYSTEM_CONF.unlink()
        self.lock.close()


@pytest.fixture
def local_slurm(tmp_path: Path) -> Iterator[LocalSlurm]:
    _ensure_slurm()
    if os.geteuid() != 0:
        pytest.skip("the local SLURM test starts slurmd and munged and needs root")
    cluster = LocalSlurm(
        tmp_path / "slurm",
        cpus=max(8, os.cpu_count() or 2),
        memory_mb=min(8000, _mem_available_mb() - 1000),
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_small_dag_runs_through_slurm_with_the_profile(
    tmp_path: Path, local_slurm: LocalSlurm
) -> None:
    work = tmp_path / "work"
    env, calls_log, image = container_env(work)
    write_config(work, tiny_config(container=str(image)))
    env["SLURM_CONF"] = str(local_slurm.conf)
    target = "results/scores/persistence.json"

    proc = snakemake(
        work,
        target,
        "--profile", str(REPO / "profiles" / "slurm"),
        "--jobs", "4",
        "--default-resources", "slurm_account=stormfusion", "slurm_partition=debug",
        "mem_mb=500", "runtime=10",
        "--set-resources", "predict_model:slurm_partition=debug",
        "train_model:slurm_partition=debug",
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "2",
        "--slurm-keep-successful-logs",
        "--latency-wait", "5",
        "--retries", "0",
        env=env,
        wrapper=["timeout", "-s", "KILL", "420"],
        timeout=450,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}\n{local_slurm.logs()}"
    )
    assert (work / target).is_file()

    # every job of the DAG was a SLURM batch job: submitted to the controller ...
    jobs = sum(DAG_JOBS.values())
    ctld = (local_slurm.root / "slurmctld.log").read_text()
    assert ctld.count("_slurm_rpc_submit_batch_job: JobId=") == jobs, ctld[-3000:]
    assert ctld.count("_job_complete: JobId=") >= jobs
    # ... one per rule job, as the plugin's kept job logs show ...
    slurm_logs = work / ".snakemake" / "slurm_logs"
    for rule, count in DAG_JOBS.items():
        logs = list((slurm_logs / f"rule_{rule}").rglob("*.log"))
        assert len(logs) == count, f"{rule}: {len(logs)} SLURM job logs, expected {count}"
    # ... and each ran its step in its own allocation, in the configured image, GPUs passed
    calls = container_calls(calls_log)
    assert len(calls) == jobs
    assert len({c["slurm_job"] for c in calls} - {None}) == jobs
    assert {c["image"] for c in calls} == {str(image)}
    assert all("--nv" in c["argv"] for c in calls)
    commands = [c["command"] for c in calls]
    for step, count in [("synthesize", 1), ("select-events", 1), ("convert", 4), ("split", 1),
                        ("predict", 1), ("score", 1)]:  # fmt: skip
        assert sum(f"stormfusion {step} " in cmd for cmd in commands) == count, step
