"""The sbatch line of every GPU job of the paper config, and `snakemake --profile
profiles/slurm` on a real single-node SLURM cluster on localhost.

Starts munged, slurmctld and slurmd from Debian's packages (slurmctld, slurmd, slurm-client,
munge; .ci/run installs them) with a `gpu` GRES backed by /dev/null, runs a slice of the demo
(one model, two test sets, no metric validation) through the shipped SLURM profile (with the
changes of `local_cluster_profile`), checks that every non-local job went through sbatch, and
that its outputs equal those of the local demo run (conftest.py's `demo_run`). See
docs/cluster.md; the settings follow the local-cluster notes verified on this machine kind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml
from demo_commands import REPO, mirror_config, run, snakemake_command, write_config

SLURM_ETC = Path("/etc/slurm")  # the jobstep plugin's inner srun needs the default location
MARKER = "# written by imhi-bench tests/test_slurm.py"
DAEMONS = ("munged", "slurmctld", "slurmd")
LOCAL_RULES = {
    "build_demo_models", "fetch_test_set", "fetch_example_responses", "fetch_bart_score_weights",
    "fetch_human_ratings", "rated_explanations", "aggregate", "plots", "answer_sample", "all",
}  # fmt: skip

# The paper config's models (workflow_config/config.yaml), each with jobs.
PAPER_MODELS = sorted(
    yaml.safe_load((REPO / "workflow_config" / "config.yaml").read_text())["models"]
)


class JobResources(dict):
    """A job's resources as the executor plugin reads them (``.get`` and attributes)."""

    __getattr__ = dict.__getitem__


def planned_jobs(output: str) -> list[types.SimpleNamespace]:
    """The jobs of a dry run's output (rule, wildcards, resources), as the plugin sees them."""
    jobs = []
    for block in output.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        line = re.search(r"^\s+resources: (.*)$", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        resources = JobResources()
        for key, value in re.findall(r"(\w+)=([^,]*)", line[1] if line else ""):
            if value != "<TBD>":
                resources[key] = int(value) if value.isdigit() else value
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        jobs.append(types.SimpleNamespace(
            name=rule, wildcards=wildcards[1] if wildcards else "", resources=resources,
            threads=int(threads[1]) if threads else 1, is_group=lambda: False,
        ))  # fmt: skip
    return jobs


def gpu_submit_lines(workdir: Path, *config_args: str) -> dict:
    """(rule, wildcards) -> the plugin's own sbatch line (`get_submit_command` +
    `set_gres_string`, snakemake-executor-plugin-slurm) of every GPU job that a dry run through
    profiles/slurm plans, from the resources the run gives each job."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--profile", str(REPO / "profiles" / "slurm"), "--dry-run",
        *config_args,
    ]  # fmt: skip
    result = run(command, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    gpu_jobs = [job for job in planned_jobs(result.stdout) if job.resources.get("gpu")]
    lines = {}
    for job in gpu_jobs:
        params = {
            "run_uuid": "run",
            "slurm_logfile": "log",
            "comment_str": f"rule_{job.name}",
            "account": "-A my_account",
            "partition": "-p gpu",
            "workdir": str(workdir),
        }
        lines[(job.name, job.wildcards)] = get_submit_command(job, params) + set_gres_string(job)
    for (rule, _), line in lines.items():
        assert " --nodes=1 " in line and re.search(r" --gpus=\d+$", line), (rule, line)
    return lines


def test_every_gpu_job_of_the_paper_config_asks_for_one_node(tmp_path):
    """`--gpus=N` is a job-wide total that SLURM may spread over nodes; every job is one
    process, so it also asks for `--nodes=1`."""
    lines = gpu_submit_lines(tmp_path)
    assert {rule for rule, _ in lines} == {"generate", "label", "score", "validate_metrics"}
    # 4 instruction models x 18 sets, 2 completion models x 9 (the API model runs locally)
    assert sum(rule == "generate" for rule, _ in lines) == 4 * 18 + 2 * 9
    # one label and one score job per model over its datasets (the API model's too)
    for rule in ("label", "score"):
        assert sorted(w for r, w in lines if r == rule) == [f"model={m}" for m in PAPER_MODELS]
    multi = {w: line for (rule, w), line in lines.items() if "--gpus=2" in line}
    assert len(multi) == 18 and all("model=MentaLLaMA-33B-lora" in w for w in multi)
    # a model's label and score job asks for the minutes per test set times its test sets
    # (stage_resources: label 10, score 30): 18 for an instruction model, 9 for a completion one
    for rule, per_set in (("label", 10), ("score", 30)):
        for model, sets in (("MentaLLaMA-chat-7B", 18), ("MentalT5", 9)):
            assert f" -t {per_set * sets} " in lines[(rule, f"model={model}")]
    print(next(iter(multi.values())))


def test_the_gpu_jobs_of_the_model_metrics_preset_ask_for_one_node(tmp_path, monkeypatch):
    """GPTScore's hf jobs (rule score_metric) go through the profile as well."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")  # the judge's key (run_on: local)
    preset = REPO / "workflow_config" / "llm_metrics.yaml"
    lines = gpu_submit_lines(tmp_path, "--configfile", str(preset))
    assert any(rule == "score_metric" for rule, _ in lines)


def sbin(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.is_file()), None
    )


def munge_works() -> bool:
    try:
        credential = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True)
        subprocess.run(["unmunge"], input=credential.stdout, capture_output=True, timeout=10,
                       check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def stop_pid_file(pid_file: Path, timeout: float = 15) -> None:
    """SIGTERM the daemon whose pid is in `pid_file`, SIGKILL if it is still there."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def stale_pid_files() -> list[Path]:
    """Pid files named by a slurm.conf that an earlier, killed run of this test left behind."""
    conf = SLURM_ETC / "slurm.conf"
    if not conf.is_file() or MARKER not in conf.read_text():
        return []
    names = re.findall(r"^Slurm(?:ctld|d)PidFile=(.+)$", conf.read_text(), re.MULTILINE)
    return [Path(name) for name in names]


def slurm_conf(state: Path) -> str:
    cpus = os.cpu_count() or 1
    available_mb = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    return f"""{MARKER}; removed after it.
ClusterName=imhibench
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# jobs stay visible to squeue this long after they end (the plugin polls with squeue)
MinJobAge=600
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={int(available_mb * 0.9)} Gres=gpu:1
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster; every daemon it started is stopped afterwards."""
    missing = [name for name in (*DAEMONS, "sbatch", "squeue", "sinfo", "munge") if not sbin(name)]
    if missing:
        pytest.skip(
            f"SLURM is not installed ({', '.join(missing)} not found); install it with "
            "apt-get install slurmctld slurmd slurm-client munge (.ci/run does, as root)"
        )
    if os.geteuid() != 0:
        pytest.skip("starting munged, slurmctld and slurmd needs root")
    conf = SLURM_ETC / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text():
        pytest.skip(f"{conf} exists and is not this test's: refusing to replace a real cluster's")
    for pid_file in stale_pid_files():
        stop_pid_file(pid_file)
    if subprocess.run(["scontrol", "ping"], capture_output=True, timeout=30).returncode == 0:
        pytest.skip("a SLURM controller is already answering on this machine")

    state = tmp_path_factory.mktemp("slurm")
    started: list[Path] = []  # pid files of the daemons this fixture started

    def stop() -> None:
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
        if jobs.returncode == 0 and jobs.stdout.split():
            subprocess.run(["scancel", *jobs.stdout.split()], capture_output=True, timeout=30)
        for pid_file in reversed(started):
            stop_pid_file(pid_file)
        for name in ("slurm.conf", "gres.conf"):
            path = SLURM_ETC / name
            if path.is_file() and MARKER in path.read_text():
                path.unlink()

    began = time.monotonic()
    try:
        SLURM_ETC.mkdir(exist_ok=True)
        conf.write_text(slurm_conf(state))
        (SLURM_ETC / "gres.conf").write_text(
            f"{MARKER}; removed after it.\n"
            "# File=/dev/null: a GPU that a CPU-only machine can schedule\n"
            "NodeName=localhost Name=gpu Count=1 File=/dev/null\n"
        )
        if not munge_works():
            run_dir = Path("/run/munge")
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.chown(run_dir, "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", sbin("munged")], check=True)
            started.append(run_dir / "munged.pid")
        subprocess.run([sbin("slurmctld")], check=True)
        started.append(state / "slurmctld.pid")
        subprocess.run([sbin("slurmd"), "-N", "localhost"], check=True)
        started.append(state / "slurmd.pid")
        node_state = ""
        for _ in range(300):
            node_state = subprocess.run(
                ["sinfo", "-h", "-n", "localhost", "-o", "%t"], capture_output=True, text=True
            ).stdout.strip()
            if node_state == "idle" or node_state.startswith(("drain", "inval")):
                break
            time.sleep(0.2)
        if node_state != "idle":
            logs = "".join(
                (state / f"{name}.log").read_text()[-1500:]
                for name in ("slurmctld", "slurmd")
                if (state / f"{name}.log").is_file()
            )
            pytest.fail(f"SLURM node state {node_state!r}, not idle:\n{logs}")
        start_seconds = time.monotonic() - began
        yield {"state": state, "start_seconds": start_seconds}
    finally:
        stop()


def local_cluster_profile(directory: Path) -> Path:
    """profiles/slurm with this cluster's differences: no slurmdbd, so squeue for job status
    and no account to validate; short waits before and between status checks (a local
    squeue is cheap; at the default 10 s each finished job waited up to 10 s to be seen)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    profile["default-resources"].pop("slurm_account")
    profile.update(
        {
            "slurm-status-command": "squeue",
            "slurm-no-account": True,
            "slurm-init-seconds-before-status-checks": 1,
            "seconds-between-status-checks": 2,
            "slurm-keep-successful-logs": True,
            "latency-wait": 10,
        }
    )
    (directory / "slurm").mkdir()
    write_config(directory / "slurm" / "config.yaml", profile)
    return directory / "slurm"


def scontrol_job(job_id: str) -> dict[str, str]:
    shown = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", shown))


# The slice of the demo run through SLURM: demo-llama on DR and SAD, asking for one GPU
# (locally `gpu` limits nothing), without the metric validation: the sbatch lines of its jobs
# are checked above, and through SLURM its chain of four jobs would double this run.
SLICE = {
    "models": ["demo-llama"],
    "datasets": ["DR", "SAD"],
    "model_catalog": {"demo-llama": {"resources": {"gpu": 1}}},
    "metric_validation": {"ratings": {"chatgpt_false_data": None}},
}
SLICE_CELLS = [("demo-llama", "DR"), ("demo-llama", "SAD")]


def same_frames(one: Path, other: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(one), pd.read_parquet(other), check_exact=True)


@pytest.mark.slow
def test_demo_through_slurm_equals_local_run(slurm_cluster, request, tmp_path):
    # the local run (conftest.py, shared with test_demo_run.py), asked for once the cluster
    # runs: a session fixture in the signature would run before the module's cluster could skip
    local, _ = request.getfixturevalue("demo_run")
    workdir = tmp_path / "work"
    profile = local_cluster_profile(tmp_path)
    config = mirror_config(tmp_path / "slice.yaml", SLICE)
    command = snakemake_command(
        workdir, "--profile", str(profile), "--local-cores", "2", configs=(config,)
    )
    began = time.monotonic()
    result = run(["timeout", "-s", "INT", "-k", "30", "600", *command], timeout=700)
    seconds = time.monotonic() - began
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    print(f"cluster start {slurm_cluster['start_seconds']:.1f} s, SLURM run {seconds:.0f} s")

    # every job but the localrules was submitted with sbatch, and SLURM ran it to completion
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)
    table = output.split("Job stats:")[1].split("\n\n")[0]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE))
    remote = {rule: int(n) for rule, n in stats.items() if rule not in LOCAL_RULES | {"total"}}
    assert remote == {"generate": 2, "label": 1, "score": 1}  # label, score: one job per model
    assert len({slurm_id for _, slurm_id in submitted}) == sum(remote.values())
    gpus = []
    for _, slurm_id in submitted:
        job = scontrol_job(slurm_id)
        assert job["JobState"] == "COMPLETED" and job["Partition"] == "gpu", job
        rule = re.match(
            r"rule_(\w+?)(?:_wildcards|$)", job.get("Comment", "")
        )  # none: no wildcards
        assert rule and rule[1] in remote, job
        if "gres/gpu=1" in job.get("TRES", "") or "gpu" in job.get("TresPerJob", ""):
            gpus.append(job["Comment"])
    # demo-llama asks for one GPU (SLICE): its generate jobs got the gpu GRES
    assert sorted(gpus) == [f"rule_generate_wildcards_demo-llama_{d}" for d in ("DR", "SAD")], gpus

    # the same numbers as the local demo run, exactly: every per-row file of the slice and its
    # rows of all_metrics (BERTScore no longer depends on the process's string hashing: the
    # scores differed in the 8th digit between SLURM and local runs)
    for model, dataset in SLICE_CELLS:
        for stage in ("generate", "label", "score", "metrics"):
            path = Path("results", stage, model, f"{dataset}.parquet")
            same_frames(workdir / path, local / path)
    metrics = [pd.read_parquet(w / "results/tables/all_metrics.parquet") for w in (workdir, local)]
    cells = [m[m["model"].eq("demo-llama") & m["dataset"].isin(SLICE["datasets"])] for m in metrics]
    assert len(cells[0]) > 0 and len(cells[0]) == len(metrics[0])
    pd.testing.assert_frame_equal(*(c.reset_index(drop=True) for c in cells), check_exact=True)
    # and the files say which SLURM job made them
    from imhibench.common.io import read_provenance

    record = read_provenance(workdir / "results" / "score" / "demo-llama" / "SAD.parquet")
    assert record["job"]["slurm_job_id"] in {slurm_id for _, slurm_id in submitted}
