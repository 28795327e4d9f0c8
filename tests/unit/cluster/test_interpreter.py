"""cluster.interpreter and submit: a job runs with the Python of the cluster's Ray workers;
a failed job's search can be continued; the submitter's commit travels with the job."""

from __future__ import annotations

import shlex
import subprocess

from runtime.cluster.interpreter import python_from_cmdline
from runtime.cluster.submit import _resumable_run, entrypoint, git_commit


def test_the_worker_interpreter_is_read_from_the_raylets_command_line():
    worker = subprocess.list2cmdline(["/opt/my venv/bin/python", "/x/default_worker.py",
                                      "--node-ip-address=127.0.0.1"])
    cmdline = ["/x/raylet", "--node_ip_address=127.0.0.1",
               f"--python_worker_command={worker}", "--java_worker_command="]
    assert python_from_cmdline(cmdline) == "/opt/my venv/bin/python"
    assert python_from_cmdline(["/x/raylet", "--store_socket_name=/tmp/s"]) is None
    assert python_from_cmdline(["--python_worker_command=/usr/bin/java -jar w.jar"]) is None
    command = entrypoint("jobs/t.yaml", ["a=1"], resume="ab" * 16, python="/opt/v/bin/python")
    assert shlex.split(command) == ["/opt/v/bin/python", "-m", "runtime", "run", "jobs/t.yaml",
                                    "--set", "a=1", "--resume", "ab" * 16]


def test_the_search_run_of_a_dead_job_is_found_in_its_log():
    run = "0123456789abcdef" * 2
    lines = ["[tune] ...", f"  search stored at s3://b/x; if this driver dies, continue it "
             f"with: mlrt run SPEC --resume {run}", "  trial 1 finished after 4 epochs"]
    assert _resumable_run(lines) == run
    assert _resumable_run(["[train] ...", "error: boom"]) is None


def test_git_commit_names_head_and_marks_uncommitted_changes(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    assert git_commit(tmp_path) is None  # not a repository
    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("2")
    assert git_commit(tmp_path) == f"{head}+dirty"
