"""The `cluster` profile on one machine: every service as a real process on 127.0.0.1.

`LocalCluster` starts a private PostgreSQL (Debian's, its own data directory, a free port), a
Redis broker and result backend, an S3-compatible endpoint (moto's server mode: an in-memory
stand-in that speaks the S3 HTTP API; no real S3 server installs from the package registries
here), Celery workers (`imgrank worker`), the Dagster webserver and the daemon, all configured
by environment variables only (deploy/README.md), and stops every process it started.
`make cluster-demo` and the cluster tests both use it.

`ClusterClient` drives a running deployment as a person would: through the webserver's GraphQL
API (stop sensors, launch a backfill or a run) and the Dagster instance (PostgreSQL).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from imgrank_dagster.lib import services

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_INSTANCE_CONFIG = PROJECT_ROOT / "deploy" / "cluster" / "dagster.yaml"
HOST = "127.0.0.1"
BUCKET = "imgrank"
WAREHOUSE_PREFIX = "warehouse"
COMPUTE_LOGS_PREFIX = "compute-logs"
DATABASE = "dagster"
DB_USER = "imgrank"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


class ClusterError(RuntimeError):
    """A service of the local cluster could not be started; the message says which and why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _new_session_dying_with_parent() -> None:
    """In the child: its own process group (stopped as one), SIGTERM when its parent dies."""
    os.setsid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_until(
    ready: Callable[[], bool], what: str, timeout: float, alive: Callable[[], str | None]
) -> None:
    """Poll ready() until true; fail with `what` when the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while not ready():
        problem = alive()
        if problem:
            raise ClusterError(f"{what}: {problem}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.25)


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen
    log: Path

    def problem(self) -> str | None:
        """None while running; otherwise how it ended and the end of its log."""
        code = self.process.poll()
        if code is None:
            return None
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return f"{self.name} exited with status {code}; the end of {self.log}:\n{tail}"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to its whole process group, SIGKILL after timeout."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # Children of the group that outlive the leader (celery's pool) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL to the whole group at once: what a machine that dies does to a worker."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def postgres_binaries() -> Path:
    """The folder of Debian's PostgreSQL server programs (the newest version installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise ClusterError(
            "PostgreSQL's server programs are missing (/usr/lib/postgresql/*/bin/pg_ctl): "
            "install Debian's package: apt-get install postgresql"
        )
    return found[-1].parent


@dataclass
class LocalCluster:
    """Every service of the cluster profile as processes on 127.0.0.1, under `root`.

    root/postgres (the database's own folder), root/dagster_home (deploy/cluster/dagster.yaml),
    root/logs (one log per process). `data_dir` is imgrank's data folder (collections file,
    images, exports), shared by every worker as it would be on a network file system.
    """

    root: Path
    data_dir: Path
    workers: int = 2
    fast_database: bool = False  # no fsync: for tests, never for data that matters
    extra_env: dict[str, str] = field(default_factory=dict)
    report: Callable[[str], None] = print
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    _postgres_started: bool = False

    # -- configuration --------------------------------------------------------------------------
    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def postgres_url(self) -> str:
        scheme = services.POSTGRES_SCHEME
        return f"{scheme}://{DB_USER}@{HOST}:{self.ports['postgres']}/{DATABASE}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def webserver_url(self) -> str:
        return f"http://{HOST}:{self.ports['webserver']}"

    @property
    def warehouse(self) -> str:
        return f"s3://{BUCKET}/{WAREHOUSE_PREFIX}"

    def environment(self) -> dict[str, str]:
        """The profile's settings: every process of the cluster gets exactly these."""
        redis = f"redis://{HOST}:{self.ports['redis']}"
        settings = {
            "DAGSTER_HOME": str(self.dagster_home),
            "IMGRANK_DATA_DIR": str(self.data_dir),
            services.EXECUTOR_ENV: "celery",
            services.POSTGRES_URL_ENV: self.postgres_url,
            services.CELERY_BROKER_ENV: f"{redis}/0",
            services.CELERY_BACKEND_ENV: f"{redis}/1",
            services.WAREHOUSE_ENV: self.warehouse,
            services.S3_ENDPOINT_ENV: self.s3_endpoint,
            # moto accepts any credentials; real ones come from the environment the same way.
            "AWS_ACCESS_KEY_ID": "imgrank",
            "AWS_SECRET_ACCESS_KEY": "imgrank-stand-in",
            "AWS_DEFAULT_REGION": "us-east-1",
            services.COMPUTE_LOGS_BUCKET_ENV: BUCKET,
            "IMGRANK_COMPUTE_LOGS_PREFIX": COMPUTE_LOGS_PREFIX,
            "FIFTYONE_DATABASE_DIR": str(self.data_dir / "fiftyone" / "db"),
            "SENTRY_OPT_OUT": "1",
            "FASTDUP_PRODUCTION": "1",
            "FIFTYONE_DO_NOT_TRACK": "true",
        }
        return {**os.environ, **settings, **self.extra_env}

    # -- starting -------------------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str], cwd: Path | None = None) -> ManagedProcess:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as handle:
            process = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                cwd=cwd or PROJECT_ROOT,
                preexec_fn=_new_session_dying_with_parent,
            )
        managed = ManagedProcess(name, process, log)
        self.processes[name] = managed
        return managed

    def start_services(self) -> None:
        """PostgreSQL, Redis and the S3 stand-in; the instance's tables and the bucket."""
        for name in ("postgres", "redis", "s3", "webserver"):
            self.ports.setdefault(name, free_port())
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CLUSTER_INSTANCE_CONFIG, self.dagster_home / "dagster.yaml")
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise ClusterError("redis-server is missing: apt-get install redis-server")
        command = [redis_server, "--port", str(self.ports["redis"]), "--bind", HOST]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        redis = self._spawn("redis", [*command, "--dir", str(self.root)])
        s3 = self._spawn(
            "s3",
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.ports["s3"])],
        )
        self._start_postgres()
        wait_until(lambda: _answers(HOST, self.ports["redis"]), "Redis", 30, redis.problem)
        wait_until(lambda: _answers(HOST, self.ports["s3"]), "S3 stand-in", 60, s3.problem)
        self._create_bucket()
        self.report(
            f"PostgreSQL {self.postgres_url}, Redis {HOST}:{self.ports['redis']}, "
            f"S3 stand-in (moto) {self.s3_endpoint}, bucket {BUCKET}"
        )

    def _run_as_database_owner(self, command: list[str], **kwargs: Any) -> None:
        # initdb refuses to run as root; Debian's package creates the postgres user for this.
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, **kwargs)
        if result.returncode != 0:
            raise ClusterError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def _start_postgres(self) -> None:
        binaries = postgres_binaries()
        folder = self.postgres_dir
        if not (folder / "PG_VERSION").exists():
            folder.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(folder, "postgres", "postgres")
                folder.chmod(0o700)
            initdb = [str(binaries / "initdb"), "-D", str(folder), "-A", "trust"]
            self._run_as_database_owner([*initdb, "-U", DB_USER, "--no-sync", "-E", "UTF8"])
        options = f"-p {self.ports['postgres']} -k {folder} -h {HOST}"
        if self.fast_database:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        command = [str(binaries / "pg_ctl"), "-D", str(folder), "-o", options]
        command += ["-l", str(folder / "server.log"), "-w", "-t", "60", "start"]
        self._run_as_database_owner(command)
        self._postgres_started = True
        import psycopg2

        connection = psycopg2.connect(
            host=HOST, port=self.ports["postgres"], user=DB_USER, dbname="postgres"
        )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("select 1 from pg_database where datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f"create database {DATABASE}")
        connection.close()

    def _create_bucket(self) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.s3_endpoint, **_stand_in_credentials())
        client.create_bucket(Bucket=BUCKET)

    def check(self) -> None:
        """What `imgrank check-services` checks, in this process: every service answers."""
        problems = services.check_services(self.environment())
        if problems:
            raise ClusterError("\n".join(problems))

    def create_instance_tables(self) -> None:
        """Create Dagster's tables once, before several processes would race to."""
        result = subprocess.run(
            [sys.executable, "-c", "import dagster; dagster.DagsterInstance.get().dispose()"],
            env=self.environment(),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ClusterError(f"creating Dagster's tables failed:\n{result.stderr[-3000:]}")

    def start_workers(self, count: int | None = None) -> list[str]:
        """Celery workers (one step at a time each); returns their Celery names."""
        names = [f"worker-{index + 1}" for index in range(count or self.workers)]
        for name in names:
            self._spawn(
                name, [sys.executable, "-m", "imgrank_dagster.cli", "worker", "--name", name]
            )
        return names

    def wait_for_workers(self, names: Iterable[str], timeout: float = 120) -> dict[str, str]:
        """Wait until every worker answers a Celery ping; {name: full Celery node name}."""
        from celery import Celery

        app = Celery(broker=self.environment()[services.CELERY_BROKER_ENV])
        wanted = set(names)
        found: dict[str, str] = {}

        def ready() -> bool:
            for reply in app.control.ping(timeout=1.0):
                for node in reply:
                    short = node.split("@", 1)[0]
                    if short in wanted:
                        found[short] = node
            return set(found) == wanted

        def alive() -> str | None:
            for name in wanted:
                problem = self.processes[name].problem()
                if problem:
                    return problem
            return None

        try:
            wait_until(ready, "Celery workers", timeout, alive)
        finally:
            app.close()
        return found

    def start_webserver(self) -> None:
        command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", HOST]
        command += ["-p", str(self.ports["webserver"]), "-m", "imgrank_dagster.definitions"]
        self._spawn("webserver", command)

    def wait_for_webserver(self, timeout: float = 180) -> None:
        import requests

        def ready() -> bool:
            try:
                return requests.get(f"{self.webserver_url}/server_info", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(ready, "Dagster webserver", timeout, self.processes["webserver"].problem)

    def start_daemon(self) -> None:
        daemon = str(Path(sys.executable).parent / "dagster-daemon")
        self._spawn("daemon", [daemon, "run", "-m", "imgrank_dagster.definitions"])

    # -- stopping -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process this cluster started, newest first; PostgreSQL last."""
        for managed in reversed(list(self.processes.values())):
            managed.stop()
        self.processes.clear()
        if self._postgres_started:
            pg_ctl = str(postgres_binaries() / "pg_ctl")
            self._run_as_database_owner(
                [pg_ctl, "-D", str(self.postgres_dir), "-m", "fast", "stop"]
            )
            self._postgres_started = False

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _answers(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _stand_in_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": "imgrank",
        "aws_secret_access_key": "imgrank-stand-in",
        "region_name": "us-east-1",
    }


# --- driving a running deployment ---------------------------------------------------------------

SENSORS_QUERY = """
query {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        sensors { id name sensorState { status } }
        schedules { id name scheduleState { id status } }
      }
    }
  }
}
"""
STOP_SENSOR = """
mutation($id: String!) {
  stopSensor(id: $id) { __typename ... on PythonError { message } }
}
"""
RESET_SENSOR = """
mutation($selector: SensorSelector!) {
  resetSensor(sensorSelector: $selector) { __typename ... on PythonError { message } }
}
"""
STOP_SCHEDULE = """
mutation($id: String!) {
  stopRunningSchedule(id: $id) { __typename ... on PythonError { message } }
}
"""
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""


class ClusterClient:
    """A running deployment through its webserver (GraphQL) and its instance (PostgreSQL)."""

    def __init__(self, host: str, port: int, instance: dg.DagsterInstance) -> None:
        from dagster_graphql import DagsterGraphQLClient

        self.url = f"http://{host}:{port}/graphql"
        self.graphql = DagsterGraphQLClient(host, port_number=port)
        self.instance = instance

    def _execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """One GraphQL request to the webserver; its errors raised as ClusterError."""
        import requests

        response = requests.post(
            self.url, json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise ClusterError(f"GraphQL: {body['errors']}")
        return body["data"]

    def _repository(self) -> dict[str, Any]:
        nodes = self._execute(SENSORS_QUERY)["repositoriesOrError"]["nodes"]
        if len(nodes) != 1:
            raise ClusterError(f"expected one code location, the webserver has {len(nodes)}")
        return nodes[0]

    def stop_automation(self) -> list[str]:
        """Stop every sensor and schedule, so that only the runs launched here run."""
        repository = self._repository()
        stopped = []
        for sensor in repository["sensors"]:
            if sensor["sensorState"]["status"] == "RUNNING":
                _ok(self._execute(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"])
                stopped.append(sensor["name"])
        for schedule in repository["schedules"]:
            if schedule["scheduleState"]["status"] == "RUNNING":
                result = self._execute(STOP_SCHEDULE, {"id": schedule["scheduleState"]["id"]})
                _ok(result["stopRunningSchedule"])
                stopped.append(schedule["name"])
        return stopped

    def reset_sensors(self, names: Iterable[str]) -> None:
        """Back to each sensor's default state (the project's sensors default to running)."""
        repository = self._repository()
        for name in names:
            selector = {
                "repositoryLocationName": repository["location"]["name"],
                "repositoryName": repository["name"],
                "sensorName": name,
            }
            _ok(self._execute(RESET_SENSOR, {"selector": selector})["resetSensor"])

    def launch_backfill(
        self, assets: Iterable[dg.AssetKey], partitions: list[str], title: str
    ) -> str:
        params = {
            "assetSelection": [{"path": key.path} for key in assets],
            "partitionNames": partitions,
            "title": title,
        }
        result = self._execute(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        _ok(result)
        return result["backfillId"]

    def launch_run(
        self, job: str, partition: str | None = None, tags: dict[str, str] | None = None
    ) -> str:
        """Submit a run of the job for one partition (or, by tags, a range of them)."""
        run_tags = dict(tags or {})
        if partition is not None:
            run_tags["dagster/partition"] = partition
        return self.graphql.submit_job_execution(job, tags=run_tags)

    def runs(self, tags: dict[str, str]) -> list[dg.DagsterRun]:
        return [
            record.dagster_run
            for record in self.instance.get_run_records(filters=dg.RunsFilter(tags=tags))
        ]

    def wait_for_runs(
        self,
        done: Callable[[], bool],
        what: str,
        timeout: float,
        processes: Iterable[ManagedProcess] = (),
    ) -> None:
        """Wait until done(); fail early when a process of the cluster died."""
        watched = list(processes)

        def alive() -> str | None:
            return next((p.problem() for p in watched if p.problem()), None)

        wait_until(done, what, timeout, alive)

    def wait_for_run(self, run_id: str, timeout: float, processes=()) -> dg.DagsterRun:
        def finished() -> bool:
            run = self.instance.get_run_by_id(run_id)
            return run is not None and run.status in FINISHED

        self.wait_for_runs(finished, f"run {run_id}", timeout, processes)
        return self.instance.get_run_by_id(run_id)


def _ok(result: dict[str, Any]) -> None:
    if "message" in result:
        raise ClusterError(f"{result['__typename']}: {result['message']}")


# --- a collection through the cluster -------------------------------------------------------

WILL_RETRY_TAG = "dagster/will_retry"
BACKFILL_TAG = "dagster/backfill"


@dataclass
class CollectionRuns:
    backfill_id: str
    ingestion: list[dg.DagsterRun]
    ranking: dg.DagsterRun


def _failed_for_good(runs: Iterable[dg.DagsterRun]) -> list[dg.DagsterRun]:
    """Failed runs that no retry will follow."""
    return [
        run
        for run in runs
        if run.status == dg.DagsterRunStatus.FAILURE and run.tags.get(WILL_RETRY_TAG) != "true"
    ]


def ingest_as_backfill(
    client: ClusterClient,
    sequence_keys: list[str],
    title: str,
    timeout: float,
    processes: Iterable[ManagedProcess] = (),
) -> tuple[str, list[dg.DagsterRun]]:
    """Backfill raw_image_sequences and image_features for the keys, as the UI's "Materialize"
    over a partition selection does; wait until every key is embedded (retries included)."""
    from imgrank_dagster.lib.names import IMAGE_FEATURES, RAW_IMAGE_SEQUENCES

    backfill_id = client.launch_backfill(
        [RAW_IMAGE_SEQUENCES, IMAGE_FEATURES], sequence_keys, title
    )
    wanted = set(sequence_keys)

    def done() -> bool:
        runs = client.runs({BACKFILL_TAG: backfill_id})
        if not runs or any(run.status not in FINISHED for run in runs):
            return False
        if wanted <= set(client.instance.get_materialized_partitions(IMAGE_FEATURES)):
            return True
        failed = _failed_for_good(runs)
        if failed and all(run.status in FINISHED for run in runs):
            raise ClusterError(
                f"backfill {backfill_id}: run(s) {[run.run_id for run in failed]} failed; see "
                "them in the Dagster UI"
            )
        return False

    client.wait_for_runs(done, f"backfill {backfill_id}", timeout, processes)
    return backfill_id, client.runs({BACKFILL_TAG: backfill_id})


def run_job_on_cluster(
    client: ClusterClient,
    job: str,
    partition: str,
    timeout: float,
    processes: Iterable[ManagedProcess] = (),
) -> dg.DagsterRun:
    run = client.wait_for_run(client.launch_run(job, partition), timeout, processes)
    if run.status != dg.DagsterRunStatus.SUCCESS:
        raise ClusterError(f"{job} [{partition}]: run {run.run_id} ended {run.status.value}")
    return run


def ingest_and_rank(
    client: ClusterClient,
    collection: str,
    timeout: float,
    processes: Iterable[ManagedProcess] = (),
    report: Callable[[str], None] = print,
) -> CollectionRuns:
    """The collection's registered sequences as one backfill, then one ranking run."""
    from imgrank_dagster.core.config.keys import sequence_keys_of
    from imgrank_dagster.lib.names import RANK_COLLECTION_JOB
    from imgrank_dagster.lib.partitions import sequence_partitions

    processes = list(processes)
    keys = sequence_keys_of(
        client.instance.get_dynamic_partitions(sequence_partitions.name), collection
    )
    started = time.perf_counter()
    backfill_id, ingestion = ingest_as_backfill(
        client, keys, f"ingest {collection}", timeout, processes
    )
    report(
        f"backfill {backfill_id}: {len(keys)} sequences embedded in {len(ingestion)} run(s) "
        f"({time.perf_counter() - started:.0f} s)"
    )
    started = time.perf_counter()
    ranking = run_job_on_cluster(client, RANK_COLLECTION_JOB, collection, timeout, processes)
    report(f"rank_collection {ranking.run_id}: ranked ({time.perf_counter() - started:.0f} s)")
    return CollectionRuns(backfill_id, ingestion, ranking)


def workers_of_runs(
    instance: dg.DagsterInstance, run_ids: Iterable[str]
) -> dict[str, set[tuple[str, str]]]:
    """{Celery worker: the (run id, step) it executed} from the runs' event logs (dagster-celery
    reports "Executing steps ... in celery worker" with the worker's name)."""
    executed: dict[str, set[tuple[str, str]]] = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = entry.dagster_event
            metadata = event.engine_event_data.metadata if event.engine_event_data else {}
            worker = metadata.get("Celery worker")
            if worker is not None:
                executed.setdefault(str(worker.value), set()).add((run_id, event.step_key or ""))
    return executed
