"""The kubernetes profile, checked offline (no cluster can run here): the Job that
K8sRunLauncher would submit for a run of imgrank, configured as deploy/kubernetes/values.yaml
configures Dagster's Helm chart, is valid against the Kubernetes schema; the run config of
deploy/kubernetes/run_config.yaml is valid for the project's jobs on k8s_job_executor.

The launcher is dagster-k8s' own; only its Kubernetes API client is replaced by one that
records the Job instead of sending it. The chart's template that turns values into the
launcher's config is mirrored by `launcher_config` (helm/dagster/templates/helpers/instance/
_run-launcher.tpl of the chart).
"""

import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from imgrank_dagster.definitions import PROJECT_ROOT, build_definitions
from imgrank_dagster.lib import names
from imgrank_dagster.lib.services import EXECUTOR_ENV

pytest.importorskip("dagster_k8s", reason="the `k8s` extra is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = PROJECT_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"  # a version the supported managed clusters run
RELEASE, NAMESPACE = "imgrank", "imgrank"
FULLNAME = f"{RELEASE}-dagster"  # the chart's dagster.fullname for release "imgrank"


def _values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "values.yaml").read_text())


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def launcher_config(values: dict[str, Any]) -> dict[str, Any]:
    """The run_launcher config the chart renders for runLauncher.type K8sRunLauncher."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": FULLNAME,
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if k8s.get("envConfigMaps"):
        config["env_config_maps"] = [item["name"] for item in k8s["envConfigMaps"]]
    if k8s.get("envSecrets"):
        config["env_secrets"] = [item["name"] for item in k8s["envSecrets"]]
    for key in ("envVars", "volumeMounts", "volumes", "labels", "resources"):
        if k8s.get(key):
            config[_snake(key)] = k8s[key]
    if k8s.get("runK8sConfig"):
        config["run_k8s_config"] = {_snake(k): v for k, v in k8s["runK8sConfig"].items()}
    return config


def code_location_context(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(image, container context) the user code deployment hands to launched runs
    (includeConfigInLaunchedRuns)."""
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    context = {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env": deployment["env"],
            "env_secrets": [item["name"] for item in deployment["envSecrets"]],
            "volumes": deployment["volumes"],
            "volume_mounts": deployment["volumeMounts"],
            "namespace": NAMESPACE,
        }
    }
    return image, context


class RecordingBatchApi:
    """Stands in for kubernetes.client.BatchV1Api: keeps the Jobs it is asked to create."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, Any]] = []

    def create_namespaced_job(self, body: Any, namespace: str, **_: Any) -> Any:
        self.jobs.append((namespace, body))
        return body


def _kubeconfig(folder: Path) -> str:
    """A kubeconfig that loads but points nowhere (the API client never connects)."""
    path = folder / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    return str(path)


@pytest.fixture
def kubernetes_definitions(monkeypatch) -> dg.Definitions:
    monkeypatch.setenv(EXECUTOR_ENV, "k8s")
    return build_definitions()


def render_run_job(tmp_path: Path, job_name: str, run_config: dict[str, Any]) -> dict[str, Any]:
    """The Job manifest K8sRunLauncher submits for a run of job_name, as a dict."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.test_utils import create_run_for_test
    from dagster_k8s import K8sRunLauncher
    from kubernetes.client import ApiClient

    values = _values()
    image, context = code_location_context(values)
    config = launcher_config(values)
    config.update(load_incluster_config=False, kubeconfig_file=_kubeconfig(tmp_path))
    api = RecordingBatchApi()
    launcher = K8sRunLauncher(**config, k8s_client_batch_api=api)
    repository = ReconstructableRepository.for_module(
        "imgrank_dagster.definitions",
        "defs",
        working_directory="/opt/imgrank",
        container_image=image,
        container_context=context,
    )
    origin = repository.get_reconstructable_job(job_name).get_python_origin()
    with dg.instance_for_test() as instance:
        launcher.register_instance(instance)
        run = create_run_for_test(
            instance,
            job_name=job_name,
            run_config=run_config,
            job_code_origin=origin,
            tags={names.PARTITION_TAG: "demo.seq-000"},
        )
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    (namespace, job) = api.jobs[0]
    assert namespace == NAMESPACE
    return ApiClient().sanitize_for_serialization(job)


def test_the_run_job_k8s_run_launcher_submits_is_a_valid_kubernetes_job(
    tmp_path: Path, kubernetes_definitions: dg.Definitions
) -> None:
    run_config = yaml.safe_load((DEPLOY / "run_config.yaml").read_text())
    manifest = render_run_job(tmp_path, names.INGEST_SEQUENCES_JOB, run_config)
    manifest.setdefault("apiVersion", "batch/v1")
    manifest.setdefault("kind", "Job")
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)

    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/imgrank:0.1.0"
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    env = {item["name"]: item for item in container["env"]}
    assert env[EXECUTOR_ENV]["value"] == "k8s"
    assert env["IMGRANK_WAREHOUSE"]["value"] == "s3://imgrank/warehouse"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "dagster-postgresql-secret"
    )
    assert {"secretRef": {"name": "imgrank-object-storage"}} in container["envFrom"]
    assert {mount["mountPath"] for mount in container["volumeMounts"]} >= {"/data/imgrank"}
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["metadata"]["labels"]["dagster/job"] == names.INGEST_SEQUENCES_JOB

    # The validator is strict: a misspelt field is refused (so the check above can fail).
    broken = {**manifest, "spec": {**manifest["spec"], "backofLimit": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_run_config_is_valid_for_every_job_on_k8s_job_executor(
    kubernetes_definitions: dg.Definitions,
) -> None:
    run_config = yaml.safe_load((DEPLOY / "run_config.yaml").read_text())
    for job in (names.INGEST_SEQUENCES_JOB, names.RANK_COLLECTION_JOB, names.REFRESH_VIEWS_JOB):
        definition = kubernetes_definitions.resolve_job_def(job)
        assert definition.executor_def.name == "k8s"
        dg.validate_run_config(definition, run_config)
    wrong = {"execution": {"config": {**run_config["execution"]["config"], "max_concurent": 2}}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(
            kubernetes_definitions.resolve_job_def(names.INGEST_SEQUENCES_JOB), wrong
        )


def test_the_image_installs_what_the_chart_serves() -> None:
    """The Dockerfile copies files that exist, installs extras that exist, and serves the
    module the chart's user code deployment asks for."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (PROJECT_ROOT / source).exists(), source
    import tomllib

    extras = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"cluster", "k8s"} <= set(extras)
    assert '".[cluster,k8s]"' in dockerfile
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    assert " ".join(deployment["dagsterApiGrpcArgs"]) in dockerfile.replace('", "', " ")
    assert f'"-p", "{deployment["port"]}"' in dockerfile
