"""Real SLURM clusters on localhost run the workflow through profiles/slurm.

Each test brings up its own munged, slurmctld and slurmd (private configuration, socket,
ports, state and logs under temporary directories; nothing written under /etc) and stops
them by PID. The SLURM client commands find the private configuration through SLURM_CONF
and, inside jobs, through thin wrappers on PATH that set it (the executor plugin's job
step drops every SLURM_* variable but the job id from what it starts, SLURM_CONF too).

- One node: twin -> event index -> convert -> split -> persistence forecasts -> scores,
  every job in the container through the stand-in apptainer, as the profile asks.
- Two nodes: two slurmd, each in its own network, UTS and mount namespaces (its own
  address on a bridge, its own host name, its own /etc/hosts), since Debian's SLURM is
  built without multiple-slurmd support. A tiny training job with `training.nodes: 2`
  runs as one SLURM job on both nodes (srun + torchrun, one gloo process per node) and
  ends with the weights of the same training on 1 node x 2 processes and on 1 process.

The tests are skipped, with the reason, only where the SLURM packages cannot be installed
or the namespaces cannot be made (not root, no `ip`/`unshare`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from workflow_support import (
    REPO,
    container_calls,
    container_env,
    snakemake,
    tiny_config,
    tool_env,
    write_config,
)

from stormfusion.training.checkpoint import read_checkpoint
from stormfusion.training.config import config_argv

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "munged")
#: Client commands jobs call; wrapped so that they read the test's configuration.
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo", "sacct")
#: The small DAG: rule -> jobs (each one SLURM job).
DAG_JOBS = {
    "synthesize_sevir": 1,
    "select_events": 1,
    "convert_to_zarr": 4,
    "split_events": 1,
    "predict_model": 1,
    "score_model": 1,
}
#: One SLURM test at a time on a machine (ports, the bridge's addresses).
LOCK = Path(tempfile.gettempdir()) / "stormfusion-slurm-test.lock"


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
SlurmctldHost={ctld_host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
SlurmdParameters=config_overrides
AuthType=auth/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
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
DefMemPerCPU=500
ReturnToService=2
{nodes}
PartitionName=debug Nodes={node_names} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass(frozen=True)
class Node:
    """A slurmd: its name and, for a namespaced node, its address on the test's bridge."""

    name: str
    address: str | None = None


#: The two namespaced nodes' network: the bridge (slurmctld's side) and the nodes.
SUBNET = "10.231.7"
TWO_NODES = (Node("sfnode1", f"{SUBNET}.2"), Node("sfnode2", f"{SUBNET}.3"))
BRIDGE = "sftestbr0"

#: Runs inside fresh network, UTS and mount namespaces: name the host, give it its own
#: /etc/hosts, wait for its end of the veth pair, address it, then exec the daemon.
NAMESPACE_INIT = """\
#!/bin/sh
set -e
name=$1 address=$2 gateway=$3 hosts=$4 link=$5
shift 5
hostname "$name"
mount --bind "$hosts" /etc/hosts
ip link set lo up
i=0
until ip link show "$link" >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -lt 200 ] || exit 3; sleep 0.05
done
ip addr add "$address/24" dev "$link"
ip link set "$link" up
ip route add default via "$gateway"
exec "$@"
"""


def _wrap_clients(bindir: Path, conf: Path) -> Path:
    """SLURM client commands that read ``conf`` whatever the environment says."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name in CLIENTS:
        real = shutil.which(name)
        if real is None:
            continue
        exe = bindir / name
        exe.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec "{real}" "$@"\n')
        exe.chmod(0o755)
    return bindir


def _run(cmd: Sequence[str]) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True, timeout=30)


class LocalSlurm:
    """munged + slurmctld + one slurmd per node; every daemon stopped by its PID.

    Nodes without an address run as ``localhost``; nodes with one each get network, UTS
    and mount namespaces joined to a bridge that carries slurmctld's address.
    """

    def __init__(self, root: Path, nodes: Sequence[Node], cpus: int, memory_mb: int) -> None:
        self.root = root
        self.nodes = tuple(nodes)
        self.namespaced = any(n.address for n in nodes)
        self.lock = LOCK.open("w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        # munged runs as `munge` and must reach its socket: a directory outside pytest's
        # private tmp tree, owned by munge.
        self.munge_dir = Path(tempfile.mkdtemp(prefix="stormfusion-munge-"))
        shutil.chown(self.munge_dir, "munge", "munge")
        self.munge_dir.chmod(0o755)
        (root / "state").mkdir(parents=True, exist_ok=True)
        self.conf = root / "slurm.conf"
        self.conf.write_text(self._conf_text(cpus, memory_mb))
        self.bindir = _wrap_clients(root / "bin", self.conf)
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.env["PATH"] = f"{self.bindir}{os.pathsep}{self.env['PATH']}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.links: list[str] = []

    def _conf_text(self, cpus: int, memory_mb: int) -> str:
        ctld = f"localhost({SUBNET}.1)" if self.namespaced else "localhost"
        lines = []
        for node in self.nodes:
            where = (
                f"NodeHostname={node.name} NodeAddr={node.address}"
                if node.address
                else "NodeHostname=localhost NodeAddr=127.0.0.1"
            )
            lines.append(
                f"NodeName={node.name} {where} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN"
            )
        return SLURM_CONF.format(
            ctld_host=ctld,
            ctld_port=_free_port(),
            slurmd_port=_free_port(),
            munge_socket=self.munge_dir / "munge.socket",
            root=self.root,
            nodes="\n".join(lines),
            node_names=",".join(n.name for n in self.nodes),
        )

    def _start(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

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
        if self.namespaced:
            self._make_bridge()
        self._start([_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)], self.root / "ctld.out")
        for node in self.nodes:
            self._start_slurmd(node)
        self._wait(lambda: self.node_states() == {"idle"}, timeout, "idle slurmd")

    def _make_bridge(self) -> None:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        self.links.append(BRIDGE)
        _run(["ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])

    def _start_slurmd(self, node: Node) -> None:
        (self.root / f"spool-{node.name}").mkdir(exist_ok=True)
        slurmd = [_sbin("slurmd"), "-D", "-N", node.name, "-f", str(self.conf)]
        if node.address is None:
            self._start(slurmd, self.root / f"slurmd-{node.name}.out")
            return
        init = self.root / "namespace-init.sh"
        init.write_text(NAMESPACE_INIT)
        init.chmod(0o755)
        hosts = self.root / "hosts"
        hosts.write_text(
            "127.0.0.1 localhost\n"
            + "".join(f"{n.address} {n.name}\n" for n in self.nodes if n.address)
        )
        inner, outer = f"{node.name[-5:]}-in", f"{node.name[-5:]}-out"
        proc = self._start(
            ["unshare", "--net", "--uts", "--mount", str(init), node.name, str(node.address),
             f"{SUBNET}.1", str(hosts), inner, *slurmd],
            self.root / f"slurmd-{node.name}.out",
        )  # fmt: skip
        _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
        self.links.append(outer)
        _run(["ip", "link", "set", inner, "netns", str(proc.pid)])
        _run(["ip", "link", "set", outer, "master", BRIDGE])
        _run(["ip", "link", "set", outer, "up"])

    def node_states(self) -> set[str]:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        states = proc.stdout.split()
        return set(states) if len(states) == len(self.nodes) else set()

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
        for link in reversed(self.links):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        shutil.rmtree(self.munge_dir, ignore_errors=True)
        self.lock.close()


def _cluster(root: Path, nodes: Sequence[Node], cpus: int) -> Iterator[LocalSlurm]:
    _ensure_slurm()
    if os.geteuid() != 0:
        pytest.skip("the local SLURM tests start slurmd and munged and need root")
    memory = min(8000, _mem_available_mb() - 1000) // len(nodes)
    # slurmstepd's Unix sockets live in the spool folder, and a socket path must stay under
    # 108 bytes: the cluster lives in a short folder under /tmp, linked from the test's own.
    short = Path(tempfile.mkdtemp(prefix="sfslurm-", dir="/tmp"))
    root.symlink_to(short, target_is_directory=True)
    cluster = LocalSlurm(short, nodes, cpus=cpus, memory_mb=memory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def local_slurm(tmp_path: Path) -> Iterator[LocalSlurm]:
    yield from _cluster(tmp_path / "slurm", [Node("localhost")], max(8, os.cpu_count() or 2))


def _namespaces_work(tmp_path: Path) -> str | None:
    """Why two namespaced nodes cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = subprocess.run(
        ["unshare", "--net", "--uts", "--mount", "sh", "-c",
         "ip link add sfprobe0 type veth peer name sfprobe1 && ip link add sfprobebr "
         "type bridge && hostname sfprobe"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"network namespaces with veth pairs and a bridge fail: {probe.stderr.strip()}"
    return None


@pytest.fixture
def two_node_slurm(tmp_path: Path) -> Iterator[LocalSlurm]:
    reason = _namespaces_work(tmp_path)
    if reason is not None:
        pytest.skip(
            f"two slurmd in network namespaces cannot run here ({reason}); Debian's SLURM has "
            "no multiple-slurmd mode. Untested here: the two-node SLURM job (the launch line "
            "is checked by tests/test_multinode.py)"
        )
    yield from _cluster(tmp_path / "slurm", TWO_NODES, cpus=2)


def _slurm_args(*extra: str) -> list[str]:
    """What a test cluster needs on top of the profile (account, partition, fast polls)."""
    return [
        "--profile", str(REPO / "profiles" / "slurm"),
        "--default-resources", "slurm_account=stormfusion", "slurm_partition=debug",
        "mem_mb=500", "runtime=10",
        "--set-resources", "predict_model:slurm_partition=debug",
        "train_model:slurm_partition=debug", *extra,
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "2",
        "--slurm-keep-successful-logs",
        "--latency-wait", "5",
        "--retries", "0",
    ]  # fmt: skip


def test_small_dag_runs_through_slurm_with_the_profile(
    tmp_path: Path, local_slurm: LocalSlurm
) -> None:
    work = tmp_path / "work"
    env, calls_log, image = container_env(work)
    write_config(work, tiny_config(container=str(image)))
    env["SLURM_CONF"] = str(local_slurm.conf)
    env["PATH"] = f"{local_slurm.bindir}{os.pathsep}{env['PATH']}"
    target = "results/scores/persistence.json"

    proc = snakemake(
        work,
        target,
        "--jobs",
        "4",
        *_slurm_args(),
        env=env,
        wrapper=["timeout", "-s", "KILL", "600"],
        timeout=630,
        check=False,
    )
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
    assert not Path("/etc/slurm/slurm.conf").is_symlink()  # the test wrote nothing there


#: Two processes average two half-batch gradients where one process takes the gradient of
#: the whole batch: equal up to float32 rounding (as tests/test_training_cli.py).
DDP_RTOL = 1e-4
#: ConvLSTM: no batch normalisation, which torch synchronises over processes only on GPUs.
DDP_RUN = {"model": "convlstm", "args": {"hidden_channels": [4]}, "training": {"epochs": 2}}


def _reference(work: Path, saved: dict[str, object], out: Path, launcher: list[str]) -> None:
    """`stormfusion train` with the settings and data of the SLURM run, another launcher."""
    argv = [
        "train", "--model", str(saved["model_name"]),
        "--model-args", json.dumps(saved["model_args"]),
        "--zarr-dir", "data/interim/zarr", "--windows", "data/interim/windows.csv",
        "--events-meta", "data/interim/events.json", "--out-dir", str(out),
        *config_argv(saved["config"]),  # type: ignore[arg-type]
    ]  # fmt: skip
    env = {**tool_env(work), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_nodes_train_the_weights_of_one_node_and_of_one_process(
    tmp_path: Path, two_node_slurm: LocalSlurm
) -> None:
    work = tmp_path / "work"
    env, calls_log, image = container_env(work)
    training = {"nodes": 2, "gpus": 0, "rdzv_port": 29611, "rdzv_timeout": 60}
    write_config(
        work, tiny_config(container=str(image), training=training, models={"ddp": DDP_RUN})
    )
    # the data, built locally; the training job alone goes to SLURM
    target = "results/models/ddp/best.pt"
    snakemake(work, target, "--omit-from", "train_model", "--cores", "2", env=tool_env(work))
    env["SLURM_CONF"] = str(two_node_slurm.conf)
    env["PATH"] = f"{two_node_slurm.bindir}{os.pathsep}{env['PATH']}"
    proc = snakemake(
        work,
        target,
        "--jobs", "1",
        "--allowed-rules", "train_model",
        *_slurm_args(),
        env=env,
        wrapper=["timeout", "-s", "KILL", "480"],
        timeout=510,
        check=False,
    )  # fmt: skip
    log = work / "results" / "logs" / "train_model" / "ddp.log"
    assert proc.returncode == 0, (
        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n"
        f"{log.read_text() if log.exists() else ''}\n{two_node_slurm.logs()}"
    )
    # one SLURM job of two nodes; one torchrun per node, each in the image
    ctld = (two_node_slurm.root / "slurmctld.log").read_text()
    assert ctld.count("_slurm_rpc_submit_batch_job: JobId=") == 1
    calls = [c for c in container_calls(calls_log) if "torchrun" in c["argv"]]
    assert sorted(c["node"] for c in calls) == [n.name for n in TWO_NODES]
    assert all(str(image) in c["argv"] for c in calls)
    text = log.read_text()
    joined = dict(re.findall(r"joined process group: rank (\d) of 2 \(gloo\) on (\S+)", text))
    assert sorted(joined) == ["0", "1"], text[-3000:]
    assert sorted(joined.values()) == [n.name for n in TWO_NODES]

    saved = read_checkpoint(work / "results" / "models" / "ddp" / "latest.pt")
    assert saved["world_size"] == 2 and saved["epoch"] == 2
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    one_node = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "stormfusion.cli"]
    _reference(work, saved, tmp_path / "one_node", one_node)
    _reference(work, saved, tmp_path / "one_process", [sys.executable, "-m", "stormfusion"])
    for name in ("one_node", "one_process"):
        ref = read_checkpoint(tmp_path / name / "latest.pt")
        assert ref["world_size"] == (2 if name == "one_node" else 1)
        for key, value in saved["model"].items():
            torch.testing.assert_close(value, ref["model"][key], rtol=DDP_RTOL, atol=1e-6)
