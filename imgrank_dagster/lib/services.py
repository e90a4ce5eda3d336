"""The services a deployment profile needs, named by the settings that point at them, and a
check that each one answers before anything starts on top of it.

Every setting is an environment variable (deploy/README.md lists them per profile). A check
that fails names the service, the variable and the address it tried, never a stack trace:
"PostgreSQL (Dagster's run and event storage) is unreachable at 127.0.0.1:5999
(IMGRANK_POSTGRES_URL): connection refused".
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

# Which executor runs the steps: "multiprocess" (default: the local profile), "celery", "k8s".
EXECUTOR_ENV = "IMGRANK_EXECUTOR"
POSTGRES_URL_ENV = "IMGRANK_POSTGRES_URL"
CELERY_BROKER_ENV = "IMGRANK_CELERY_BROKER"
CELERY_BACKEND_ENV = "IMGRANK_CELERY_BACKEND"
WAREHOUSE_ENV = "IMGRANK_WAREHOUSE"
# The standard AWS variables, read by s3fs (the warehouse) and boto3 (compute logs) alike.
S3_ENDPOINT_ENV = "AWS_ENDPOINT_URL"
COMPUTE_LOGS_BUCKET_ENV = "IMGRANK_COMPUTE_LOGS_BUCKET"

CONNECT_TIMEOUT_SECONDS = 5.0


class ServiceUnavailable(RuntimeError):
    """A service of the deployment does not answer; the message names it and its setting."""


@dataclass(frozen=True)
class Service:
    name: str  # what a person calls it, and what it is for
    setting: str  # the environment variable that points at it
    address: str  # its URL, credentials masked

    def unavailable(self, problem: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"{self.name} is unreachable at {self.address} ({self.setting}): {problem}"
        )


def masked(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def required_setting(name: str, purpose: str, environ: Mapping[str, str] | None = None) -> str:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    if not value:
        raise ServiceUnavailable(f"{name} is not set: it must point at {purpose}")
    return value


def _tcp_probe(service: Service, url: str, default_port: int) -> None:
    """Fail fast with the service's name when nothing listens at the URL's host and port."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as error:
        raise service.unavailable(error.strerror or str(error)) from None


# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dagster-postgres installs psycopg2.
POSTGRES_SCHEME = "postgresql+psycopg2"


def check_postgres(url: str) -> None:
    """Connect and run `select 1` with dagster-postgres' driver (psycopg2)."""
    service = Service("PostgreSQL (Dagster's run and event storage)", POSTGRES_URL_ENV, masked(url))
    scheme = urlsplit(url).scheme
    if scheme != POSTGRES_SCHEME:
        raise ServiceUnavailable(
            f"{POSTGRES_URL_ENV} must start with {POSTGRES_SCHEME}:// (got {scheme}://): "
            "dagster-postgres talks to PostgreSQL through psycopg2"
        )
    _tcp_probe(service, url, 5432)
    import psycopg2

    plain = urlunsplit(urlsplit(url)._replace(scheme="postgresql"))
    try:
        connection = psycopg2.connect(plain, connect_timeout=int(CONNECT_TIMEOUT_SECONDS))
    except psycopg2.Error as error:
        raise service.unavailable(str(error).strip()) from None
    try:
        with connection.cursor() as cursor:
            cursor.execute("select 1")
    finally:
        connection.close()


def check_broker(url: str, setting: str = CELERY_BROKER_ENV) -> None:
    """Connect to the Celery broker (Redis or RabbitMQ) with kombu, as Celery does."""
    name = "the Celery broker" if setting == CELERY_BROKER_ENV else "the Celery result backend"
    service = Service(name, setting, masked(url))
    scheme = urlsplit(url).scheme
    _tcp_probe(service, url, 6379 if scheme.startswith("redis") else 5672)
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # kombu raises the transport's own errors
        raise service.unavailable(str(error).strip() or type(error).__name__) from None


def warehouse_storage_options(
    url: str, environ: Mapping[str, str] | None = None, credentials: bool = False
) -> dict:
    """fsspec options for the warehouse URL from the standard AWS variables (s3:// only).

    s3fs reads them from the process environment too; passing the endpoint keeps every process
    on the address it was given. Credentials only when asked (a check of another environment):
    the IO manager's options show in the Dagster UI, so there s3fs reads them itself.
    """
    env = os.environ if environ is None else environ
    if not url.startswith("s3://"):
        return {}
    options: dict[str, object] = {}
    if env.get(S3_ENDPOINT_ENV):
        options["endpoint_url"] = env[S3_ENDPOINT_ENV]
    if credentials and env.get("AWS_ACCESS_KEY_ID"):
        options["key"] = env["AWS_ACCESS_KEY_ID"]
        options["secret"] = env.get("AWS_SECRET_ACCESS_KEY", "")
    if credentials and env.get("AWS_DEFAULT_REGION"):
        options["client_kwargs"] = {"region_name": env["AWS_DEFAULT_REGION"]}
    return options


def check_warehouse(url: str, environ: Mapping[str, str] | None = None) -> None:
    """The warehouse's bucket exists and answers (a local folder needs no check)."""
    from upath import UPath

    env = os.environ if environ is None else environ
    endpoint = env.get(S3_ENDPOINT_ENV)
    where = f"{url} via {endpoint}" if endpoint else url
    service = Service("The Parquet warehouse", WAREHOUSE_ENV, where)
    if url.startswith("s3://") and endpoint:
        _tcp_probe(Service("The S3 endpoint", S3_ENDPOINT_ENV, endpoint), endpoint, 443)
    path = UPath(url, **warehouse_storage_options(url, env, credentials=True))
    if path.protocol != "s3":
        return
    bucket = path.parts[0].rstrip("/")
    try:
        exists = path.fs.exists(bucket)
    except Exception as error:  # botocore / s3fs raise their own errors
        raise service.unavailable(f"{type(error).__name__}: {error}") from None
    if not exists:
        raise service.unavailable(f"the bucket {bucket!r} does not exist")


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], None]


def profile_checks(environ: Mapping[str, str] | None = None) -> list[Check]:
    """The checks the configured profile needs: PostgreSQL when the instance uses it (the
    setting is present), the broker and result backend for Celery, the warehouse when remote."""
    env = os.environ if environ is None else environ
    checks: list[Check] = []
    if env.get(POSTGRES_URL_ENV):
        checks.append(Check("PostgreSQL", lambda: check_postgres(env[POSTGRES_URL_ENV])))
    if env.get(EXECUTOR_ENV, "").strip() == "celery":
        broker = required_setting(CELERY_BROKER_ENV, "the Celery broker (redis://...)", env)
        backend = required_setting(CELERY_BACKEND_ENV, "the Celery result backend", env)
        checks.append(Check("Celery broker", lambda: check_broker(broker)))
        checks.append(Check("Celery backend", lambda: check_broker(backend, CELERY_BACKEND_ENV)))
    warehouse = env.get(WAREHOUSE_ENV, "")
    if "://" in warehouse and not warehouse.startswith("file://"):
        checks.append(Check("warehouse", lambda: check_warehouse(warehouse, env)))
    return checks


def check_services(environ: Mapping[str, str] | None = None) -> list[str]:
    """Run every check of the profile; the problems, one line each (empty: all answer)."""
    problems: list[str] = []
    try:
        checks = profile_checks(environ)
    except ServiceUnavailable as error:
        return [str(error)]
    for check in checks:
        try:
            check.run()
        except ServiceUnavailable as error:
            problems.append(str(error))
    return problems
