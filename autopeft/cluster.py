"""Batch scripts that start a Ray cluster on an allocation and run a study on it.

``autopeft submit`` writes them: a SLURM batch script (Ray head on the node it runs on, a
worker on each other node with ``srun``) or a plain-shell one (head where it runs, workers
over ``ssh``). Each carries the study file, waits for its nodes with bounded checks (the
helpers in :mod:`autopeft.cluster_node`), runs ``autopeft run --executor
ray`` on the head and stops exactly the Ray nodes it started. See ``docs/cluster.md``.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

from autopeft.core.errors import ConfigError, Problem
from autopeft.core.secrets import has_password, masked

RAY_PORT = 6379
#: The environment variable the scripts read the storage URL from (it wins over --storage).
STORAGE_ENV = "AUTOPEFT_STORAGE"


@dataclass(frozen=True)
class ClusterJob:
    """What to run where.

    Attributes:
        study_name: the study's name (job name, script name, staged file name).
        study_yaml: the study file's text, self-contained (see :func:`staged_study`).
        storage: the study storage URL; one with a password is never written into a script.
        gpus_per_node: None: each node's GPUs as SLURM allocated them, else Ray's detection.
        head_address: the head's IPv4 address; None: detected on the head at run time.
        root: ``autopeft run --root`` (None: its default, ``studies`` in the working folder).
    """

    study_name: str
    study_yaml: str
    storage: str | None = None
    nodes: int = 1
    gpus_per_node: int | None = None
    cpus_per_node: int = 8
    time: str = "04:00:00"
    partition: str | None = None
    account: str | None = None
    python: str = "python"
    hosts: tuple[str, ...] = ()
    port: int = RAY_PORT
    head_address: str | None = None
    root: str | None = None

    def check(self) -> None:
        """Raise ConfigError for settings no script can run with."""
        for field, value, low, high in (
            ("--nodes", self.nodes, 1, None),
            ("--cpus-per-node", self.cpus_per_node, 1, None),
            ("--gpus-per-node", self.gpus_per_node, 0, None),
            ("--port", self.port, 1024, 65535),
        ):
            if value is not None and (value < low or (high is not None and value > high)):
                rule = f"{low} <= {field[2:]} <= {high}" if high else f"{field[2:]} >= {low}"
                raise ConfigError(Problem(field, f"{rule} must hold", value))
        try:
            ipaddress.IPv4Address(self.head_address or "0.0.0.0")
        except ValueError:
            rule = "the head's IPv4 address, the one the other nodes reach it at"
            hint = "leave it out to use the address of the head's default route"
            raise ConfigError(Problem("--head-address", rule, self.head_address, hint)) from None


def staged_study(path: Path) -> str:
    """The study file's text, made to load from any folder: the scripts write it on the head.

    A study names its search-space file and task data relative to itself; those references
    are resolved here by the rules :func:`autopeft.core.config.parse_study` applies (the
    search space inlined, task paths made absolute), so the parsed study is the same as the
    original's. A file without such references is kept as written, comments included.
    """
    import yaml

    from autopeft.core.config import read_yaml, task_paths_from

    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        return text
    base = Path(os.path.abspath(path)).parent
    resolved = dict(raw)
    if isinstance(raw.get("search_space"), str):
        space = base / raw["search_space"]
        resolved["search_space"] = read_yaml(space if space.is_file() else raw["search_space"])
    if "task" in raw:
        resolved["task"] = task_paths_from(raw["task"], base)
    if resolved == raw:
        return text if text.endswith("\n") else text + "\n"
    return f"# {path}, with its search space inlined and its task paths absolute\n" + (
        yaml.safe_dump(resolved, sort_keys=False)
    )


# The parts of a script that do not depend on the job. They use the variables the settings
# block defines (python, port, cpus, gpus, head_address, root, storage, ...).
_COMMON = r"""
fail() { echo "autopeft: $*" >&2; exit 1; }

# Stop the Ray nodes this script started (only those), then leave with the script's status.
cleanup() {
  local status=$? pid deadline
  trap - EXIT INT TERM
  set +e
  if ((${#pids[@]})); then
    echo "autopeft: stopping the Ray nodes" >&2
    stop_nodes
    # `ray start --block` drains its node for up to 30 s after SIGTERM.
    deadline=$((SECONDS + 60))
    for pid in "${pids[@]}"; do
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "autopeft: a Ray node did not stop in 60 s (process $pid): killing it" >&2
        kill -KILL "$pid" 2>/dev/null
      fi
    done
    wait 2>/dev/null
  fi
  rm -rf "$stage"
  exit "$status"
}

pids=()
stage=$(mktemp -d "${TMPDIR:-/tmp}/autopeft-job.XXXXXX")
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ((storage_from_env)) && [[ -z $storage ]]; then
  fail "export $storage_env=<the storage URL> before running this script (it holds a" \
    "password, so it is not written here)"
fi

# Ray heads enable token authentication when ~/.ray/auth_token exists, while `ray start
# --address` and health checks only use a token when RAY_AUTH_MODE says so: give every Ray
# process of this job the same mode and a fresh token (srun passes the environment on).
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
if [[ $RAY_AUTH_MODE == token && -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} ]]; then
  RAY_AUTH_TOKEN=$("$python" -c 'import secrets; print(secrets.token_hex(32))')
  export RAY_AUTH_TOKEN
fi

# Extra `ray start` arguments (e.g. --temp-dir on a scratch disk), split on white space.
read -r -a head_args <<<"${AUTOPEFT_RAY_HEAD_ARGS:-}"
read -r -a worker_args <<<"${AUTOPEFT_RAY_WORKER_ARGS:-}"
node_args=(--num-cpus="$cpus")
if [[ -n $gpus ]]; then node_args+=(--num-gpus="$gpus"); fi

"""

# After the nodes are known (``workers``): the head's address and the wait for it.
_ADDRESS = r"""
# The address the other nodes reach the head at: given, or the source address of this
# machine's default route. Never a loopback address when there are other nodes: Ray would
# read it on each worker as that worker's own address.
head_ip=$head_address
if [[ -z $head_ip ]]; then
  head_ip=$("$python" -m autopeft.cluster_node host-ip)
  if [[ $head_ip == 127.* || $head_ip == localhost ]] && ((${#workers[@]})); then
    fail "this machine's address is $head_ip (a loopback address), which the other nodes" \
      "cannot reach; give the head's address: autopeft submit ... --head-address IP"
  fi
fi
address="$head_ip:$port"

# Wait until the head answers (its process alive, within AUTOPEFT_HEAD_TIMEOUT seconds).
wait_for_head() {
  local deadline=$((SECONDS + head_timeout))
  until "$python" -m ray.scripts.scripts health-check --address "$address" >/dev/null 2>&1; do
    kill -0 "${pids[0]}" 2>/dev/null || fail "the Ray head stopped before it answered" \
      "at $address (its output is above)"
    ((SECONDS < deadline)) || fail "the Ray head did not answer at $address within" \
      "${head_timeout} s (set AUTOPEFT_HEAD_TIMEOUT to wait longer)"
    sleep 2
  done
  echo "autopeft: the Ray head answers at $address"
}
"""

_RUN = r"""
# The study file: only the driver reads it (Ray sends the trials' configuration to the
# workers), so it is written here, on the head, not looked up at a path of another machine.
study="$stage/$study_name.yaml"
cat >"$study" <<'@DELIMITER@'
@STUDY@@DELIMITER@

start_head
wait_for_head
for node in ${workers[@]+"${workers[@]}"}; do start_worker "$node"; done
# Every node joined (within AUTOPEFT_NODES_TIMEOUT seconds), or the job fails here.
"$python" -m autopeft.cluster_node wait-nodes "$address" "$((${#workers[@]} + 1))" \
  "$nodes_timeout" "${pids[@]}"

run_args=(--executor ray --address "$address" --quiet)
if [[ -n $root ]]; then run_args+=(--root "$root"); fi
# Through the environment: a password on the command line would show in `ps`.
if [[ -n $storage ]]; then export "$storage_env=$storage"; fi
"$python" -m autopeft.cli run "$study" "${run_args[@]}"
"""

_SLURM_NODES = r"""
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
((${#nodes[@]})) || fail "scontrol listed no nodes for SLURM_JOB_NODELIST='${SLURM_JOB_NODELIST:-}'"
# The head is the node this script (and so the driver, which needs a Ray node) runs on.
head=${SLURMD_NODENAME:-${nodes[0]}}
workers=()
for node in "${nodes[@]}"; do
  if [[ $node != "$head" ]]; then workers+=("$node"); fi
done
"""

_SLURM = r"""
# One blocking `srun` step per Ray node: SLURM tracks its processes, and SIGTERM to the
# step stops exactly that node. GPUs: --gpus-per-node when given, else the step's
# $SLURM_GPUS_ON_NODE, else Ray's detection (which honours CUDA_VISIBLE_DEVICES).
ray_node='exec "$0" -m ray.scripts.scripts start "$@"'
if [[ -z $gpus ]]; then ray_node+=' ${SLURM_GPUS_ON_NODE:+--num-gpus=$SLURM_GPUS_ON_NODE}'; fi
ray_node+=' --block'
step() {  # step NODE RAY-START-ARGUMENTS...
  local node=$1
  shift
  srun --nodes=1 --ntasks=1 --cpus-per-task="$cpus" ${gpus:+--gpus-per-node="$gpus"} \
    -w "$node" bash -c "$ray_node" "$python" "$@" &
  pids+=("$!")
}
start_head() {
  step "$head" --head --node-ip-address="$head_ip" --port="$port" "${node_args[@]}" \
    ${head_args[@]+"${head_args[@]}"}
}
start_worker() {
  step "$1" --address="$address" "${node_args[@]}" ${worker_args[@]+"${worker_args[@]}"}
}
stop_nodes() { kill -TERM "${pids[@]}" 2>/dev/null; }
"""

_SHELL = r"""
fds=()
start_head() {
  "$python" -m ray.scripts.scripts start --head --node-ip-address="$head_ip" --port="$port" \
    "${node_args[@]}" ${head_args[@]+"${head_args[@]}"} --block &
  pids+=("$!")
}
# A worker: `ray start --block` in the background on the host, stopped when the ssh
# connection's input ends, i.e. when this script ends, however it ends. Its first two lines
# carry Ray's auth mode and token, so the token is on no command line.
worker_script='IFS= read -r RAY_AUTH_MODE; IFS= read -r RAY_AUTH_TOKEN;'
worker_script+=' export RAY_AUTH_MODE RAY_AUTH_TOKEN; [ -n "$RAY_AUTH_MODE" ] ||'
worker_script+=' unset RAY_AUTH_MODE; [ -n "$RAY_AUTH_TOKEN" ] || unset RAY_AUTH_TOKEN;'
worker_script+=' "$0" -m ray.scripts.scripts start "$@" --block </dev/null & pid=$!;'
worker_script+=' read -r _; kill -TERM "$pid" 2>/dev/null; wait "$pid"'
start_worker() {
  local fifo="$stage/worker-${#pids[@]}" remote fd
  mkfifo "$fifo"
  remote=$(printf '%q ' bash -c "$worker_script" "$python" --address="$address" \
    "${node_args[@]}" ${worker_args[@]+"${worker_args[@]}"})
  ssh -o BatchMode=yes "$1" "$remote" <"$fifo" &
  pids+=("$!")
  exec {fd}>"$fifo"
  fds+=("$fd")
  # In a subshell: if ssh already failed, SIGPIPE ends that, not this script.
  (printf '%s\n%s\n' "$RAY_AUTH_MODE" "${RAY_AUTH_TOKEN:-}" >&"$fd") 2>/dev/null || true
}
stop_nodes() {
  local fd
  for fd in ${fds[@]+"${fds[@]}"}; do exec {fd}>&-; done
  kill -TERM "${pids[0]}" 2>/dev/null
}
"""


def _settings(job: ClusterJob, workers: list[str]) -> list[str]:
    """The job's settings as shell assignments (the only job-specific part besides the study)."""
    q = shlex.quote
    secret = has_password(job.storage)
    default = "" if (secret or not job.storage) else job.storage
    lines = [
        f"study_name={q(job.study_name)}",
        f"python={q(job.python)}",
        f"port={job.port}",
        f"cpus={job.cpus_per_node}",
        "# empty: each node's GPUs as SLURM allocated them, else as Ray detects them",
        f"gpus={'' if job.gpus_per_node is None else job.gpus_per_node}",
        "# empty: the head's default-route address, detected on the head",
        f"head_address={q(job.head_address or '')}",
        f"root={q(job.root or '')}  # autopeft run --root (empty: its default)",
        f"storage_env={STORAGE_ENV}",
    ]
    if secret:
        lines += [
            f"# The storage URL holds a password, so it is read from ${STORAGE_ENV}:",
            f"#   export {STORAGE_ENV}={q(masked(job.storage or ''))}  (the real password)",
        ]
    lines += [
        f"storage=${{{STORAGE_ENV}:-{q(default) if default else ''}}}",
        f"storage_from_env={int(secret)}",
        "head_timeout=${AUTOPEFT_HEAD_TIMEOUT:-120}",
        "nodes_timeout=${AUTOPEFT_NODES_TIMEOUT:-300}",
    ]
    if workers:
        lines.append(f"workers=({' '.join(q(w) for w in workers)})")
    return [*lines, ""]


def _header(mode: str, job: ClusterJob, where: str) -> list[str]:
    about = (
        f"Generated by `autopeft submit {mode}` for the study {job.study_name}. It starts "
        f"{where}, waits until every node joined, runs the study there (`autopeft run "
        "--executor ray`) and stops the Ray nodes it started when it ends, however it ends. "
        f"Run-time settings: {STORAGE_ENV} (the storage URL; wins over the one below), "
        "AUTOPEFT_HEAD_TIMEOUT and AUTOPEFT_NODES_TIMEOUT (seconds; 120 and 300), "
        "AUTOPEFT_RAY_HEAD_ARGS and AUTOPEFT_RAY_WORKER_ARGS (more `ray start` arguments). "
        "Every node needs the same Python environment: see autopeft's docs/cluster.md."
    )
    return [
        *textwrap.wrap(about, 90, initial_indent="# ", subsequent_indent="# "),
        "set -euo pipefail",
    ]


def _assemble(lines: list[str], nodes: str, body: str, job: ClusterJob) -> str:
    """The script: settings, common parts, the variant's ``nodes`` and ``body``, the run."""
    text = "\n".join(lines) + _COMMON + nodes + _ADDRESS + body + _RUN
    study = job.study_yaml if job.study_yaml.endswith("\n") else job.study_yaml + "\n"
    delimiter = "AUTOPEFT_STUDY_YAML"
    while delimiter in study.splitlines():  # a heredoc ends at the first line equal to it
        delimiter += "_"
    return text.replace("@DELIMITER@", delimiter).replace("@STUDY@", study)


def slurm_script(job: ClusterJob) -> str:
    """A ``sbatch`` script: Ray head where it runs, workers on the other nodes, the study."""
    job.check()
    sbatch = [
        f"#SBATCH --job-name={job.study_name}",
        f"#SBATCH --nodes={job.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={job.cpus_per_node}",
        f"#SBATCH --time={job.time}",
        f"#SBATCH --output={job.study_name}-%j.log",
    ]
    if job.gpus_per_node:
        sbatch.append(f"#SBATCH --gpus-per-node={job.gpus_per_node}")
    if job.partition:
        sbatch.append(f"#SBATCH --partition={job.partition}")
    if job.account:
        sbatch.append(f"#SBATCH --account={job.account}")
    where = "a Ray head on the first node and a worker on each other node (srun)"
    lines = ["#!/usr/bin/env bash", *sbatch, *_header("--slurm", job, where)]
    return _assemble(lines + _settings(job, []), _SLURM_NODES, _SLURM, job)


def shell_script(job: ClusterJob) -> str:
    """A plain-shell script (no SLURM): Ray head where it runs, workers on ``hosts`` (ssh).

    Raises:
        ConfigError: without ``hosts``. A script with no workers would only start a
            one-machine Ray, which ``autopeft run --executor ray`` does by itself; an
            omitted ``--hosts`` is far more likely a mistake than that intent.
    """
    if not job.hosts:
        raise ConfigError(
            Problem(
                "--hosts",
                "--shell needs the worker hosts (the script starts a Ray worker on each over ssh)",
                hint="e.g. --hosts gpu1,gpu2; to use only this machine, run the study here: "
                "autopeft run FILE --executor ray",
            )
        )
    job.check()
    where = "a Ray head on this machine and a worker on each host (ssh, no prompts)"
    lines = ["#!/usr/bin/env bash", *_header("--shell", job, where)]
    return _assemble(lines + _settings(job, list(job.hosts)), "", _SHELL, job)


def submit(
    script: str, path: Path, now: bool, shell: bool = False, storage: str | None = None
) -> str:
    """Write ``script`` to ``path``; with ``now`` submit it with sbatch. Returns a message.

    ``shell``: the script is a plain-shell one (:func:`shell_script`), run with bash, not
    submitted to SLURM. ``storage``: the job's storage URL; one with a password reaches the
    job through ``$AUTOPEFT_STORAGE`` (set here for ``now``, else the message says how).

    Raises:
        ConfigError: for ``now`` with ``shell``, or when sbatch is missing or fails.
    """
    if now and shell:
        raise ConfigError(
            Problem(
                "--now",
                "--now submits a SLURM script with sbatch; a --shell script is run with bash",
                hint="leave out --now and run the script: bash SCRIPT",
            )
        )
    secret = storage if has_password(storage) else None
    # A database's user and host are connection details: the owner's alone to read.
    database = bool(storage) and not str(storage).startswith("sqlite")
    mode = 0o700 if database else 0o755
    path.unlink(missing_ok=True)  # created anew, so the mode below is the file's from the start
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as out:
        out.write(script)
    path.chmod(mode)  # os.open's mode is masked by the umask
    run = f"bash {path}" if shell else f"sbatch {path}"
    note = (
        f"\nthe storage URL holds a password, so the script reads it from ${STORAGE_ENV}: "
        f"export {STORAGE_ENV}={shlex.quote(masked(secret))} (with the real password) "
        f"before `{run}`" + ("" if shell else "; SLURM passes your environment on to the job")
        if secret
        else ""
    )
    if not now:
        return f"wrote {path}; {'run' if shell else 'submit'} it with: {run}{note}"
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError(
            Problem(
                "--now",
                "sbatch is not on PATH: this machine has no SLURM client",
                hint=f"copy {path} to the cluster's login node and run sbatch there, or "
                "use --shell for machines without SLURM",
            )
        )
    env = dict(os.environ, **({STORAGE_ENV: secret} if secret else {}))
    done = subprocess.run([sbatch, str(path)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise ConfigError(Problem("--now", f"sbatch failed: {done.stderr.strip()}"))
    return done.stdout.strip()
