"""The Bicep against the code, without Azure: resources (shared/resources.py), app settings (the bindings'
%SETTING% and connection names, shared/settings.py), azd conventions and the hygiene checkov looks for.
Parsed with pycep-parser (the Bicep grammar on PyPI); `make infra-check` runs checkov itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pycep import BicepParser

from shared import resources
from shared.settings import Settings
from tests.infra_bicep import INFRA, ROOT, app_settings, bicep_files, bindings_module, body, module_params, parse

# Settings the platform (host, worker, SDKs) reads rather than shared/settings.py.
PLATFORM_SETTINGS = {
    "AZURE_CLIENT_ID",  # DefaultAzureCredential: which user-assigned identity
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # host + exporter: Entra ID auth (local auth is off)
    "PYTHON_ENABLE_OPENTELEMETRY",  # worker: OpenTelemetry context from the host
    "OTEL_SERVICE_NAME",  # OpenTelemetry resource service.name (cloud_RoleName)
}
# Which service URI a binding kind needs on its identity-based connection.
SERVICE_OF_KIND = {
    "blob_trigger": "blob", "blob_input": "blob", "blob_output": "blob",
    "queue_trigger": "queue", "queue_output": "queue",
    "table_input": "table", "table_output": "table",
}
DURABLE_KINDS = {"durable_client_input", "orchestration_trigger", "activity_trigger", "entity_trigger"}


def test_every_bicep_file_parses_and_a_broken_one_does_not(tmp_path: Path) -> None:
    assert len(bicep_files()) >= 10
    for path in bicep_files():
        assert parse(str(path.relative_to(INFRA))), path
    broken = tmp_path / "broken.bicep"
    broken.write_text((INFRA / "app" / "identity.bicep").read_text().replace("location: location", "location: ="))
    with pytest.raises(Exception):  # lark's error type depends on the grammar rule
        BicepParser().parse(file_path=broken)


def test_storage_declares_exactly_the_containers_queues_and_tables_of_the_code() -> None:
    params = module_params("storage")
    containers = [c for c in params["containers"] if not c.startswith("app-package-")]
    assert sorted(containers) == sorted(resources.CONTAINERS)
    assert sorted(params["queues"]) == sorted(resources.QUEUES)
    assert sorted(params["tables"]) == sorted(resources.TABLES)
    for queue in resources.TRIGGER_QUEUES:
        assert resources.poison(queue) in params["queues"], f"{queue} has no -poison twin in the Bicep"
    # ... and the storage module really declares one resource per name it is given.
    storage = parse("app/storage.bicep")["resources"]
    loops = {name: r["config"]["loop_type"]["detail"]["array_name"] for name, r in storage.items() if "loop_type" in
             r.get("config", {})}
    assert loops == {"blobContainers": "containers", "storageQueues": "queues", "storageTables": "tables"}


def test_the_code_and_the_bicep_agree_on_every_queue_the_app_creates() -> None:
    """What `wharf resources ensure` creates under the Bicep's settings is what the Bicep declares."""
    settings = app_settings()
    configured = Settings(POLL_QUEUE=settings["POLL_QUEUE"], LANDED_QUEUE=settings["LANDED_QUEUE"],
                          TRANSFER_QUEUE=settings["TRANSFER_QUEUE"], WHARF_EVENTS_QUEUE=settings["WHARF_EVENTS_QUEUE"],
                          REDELIVERY_QUEUE=settings["REDELIVERY_QUEUE"],
                          AzureWebJobsStorage="x")
    from shared.bootstrap import build_services

    assert sorted(build_services(configured).queue_names()) == sorted(module_params("storage")["queues"])


def test_app_settings_cover_every_binding_setting_and_connection() -> None:
    settings = app_settings()
    bindings = bindings_module().scan()
    assert any(b.kind == "queue_trigger" for b in bindings) and any(b.kind == "event_grid_trigger" for b in bindings)
    missing = []
    for b in bindings:
        missing += [f"%{s}% ({b.function})" for s in sorted(b.settings) if s not in settings]
        if b.connection:
            needed = [f"{b.connection}__credential", f"{b.connection}__clientId"]
            if b.kind in SERVICE_OF_KIND:
                needed.append(f"{b.connection}__{SERVICE_OF_KIND[b.kind]}ServiceUri")
            missing += [f"{n} ({b.function})" for n in needed if n not in settings]
        if b.kind in DURABLE_KINDS or (b.kind == "timer_trigger" and b.args.get("use_monitor")):
            # The Durable task hub (queues, tables, leases) and timer schedule monitors use AzureWebJobsStorage.
            missing += [f"AzureWebJobsStorage__{s}ServiceUri ({b.function})" for s in ("blob", "queue", "table")
                        if f"AzureWebJobsStorage__{s}ServiceUri" not in settings]
    assert not missing, f"app settings the Bicep does not set: {sorted(set(missing))}"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    # %SETTING% queue names point at queues the Bicep declares.
    queues = module_params("storage")["queues"]
    for b in bindings:
        if b.kind == "queue_trigger":
            for s in b.settings:
                assert settings[s] in queues, (b.function, s, settings[s])


def test_every_app_setting_is_one_the_app_or_the_platform_reads() -> None:
    known = {alias for f in Settings.model_fields.values() if f.validation_alias is not None
             for alias in getattr(f.validation_alias, "choices", [f.validation_alias])}
    unknown = [name for name in app_settings()
               if name not in known and name not in PLATFORM_SETTINGS and not name.startswith("AzureWebJobsStorage__")]
    assert not unknown, f"the Bicep sets settings nothing reads (a typo?): {unknown}"
    settings = app_settings()
    assert settings["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    assert settings["WHARF_PUBLISHER"] == "servicebus"
    assert settings["SERVICEBUS_TOPIC"] == resources.EVENTS_TOPIC
    assert "AzureWebJobsStorage" not in settings, "no connection string: identity only"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].endswith(";Authorization=AAD")


def test_event_grid_blob_triggers_are_the_containers_infra_subscribes() -> None:
    triggers = bindings_module().event_grid_blob_triggers()
    assert ("intake_drop", resources.DROP) in triggers and ("intake_outbound", resources.OUTBOUND) in triggers
    registered = {b.function for b in bindings_module().scan() if b.kind == "event_grid_trigger"}
    assert registered == set(resources.EVENT_GRID_TRIGGERS), "every Event Grid trigger needs its container"
    assert {c for _, c in triggers} <= set(resources.EVENT_GRID_CONTAINERS)
    assert all(c in resources.CONTAINERS for c in resources.EVENT_GRID_CONTAINERS)
    hook = (ROOT / "scripts" / "azd" / "postdeploy.sh").read_text()
    assert "scripts/bindings.py eventgrid" in hook and "Microsoft.Storage.BlobCreated" in hook
    assert "--subject-begins-with \"/blobServices/default/containers/${container}/\"" in hook
    assert "--endpoint-type azurefunction" in hook
    assert parse("app/eventgrid.bicep")["resources"]["systemTopic"]["config"]["properties"]["topicType"] == \
        "Microsoft.Storage.StorageAccounts"


def test_the_service_bus_topic_has_a_subscription() -> None:
    bus = parse("app/servicebus.bicep")["resources"]
    assert bus["subscription"]["type"] == "Microsoft.ServiceBus/namespaces/topics/subscriptions"
    assert module_params("serviceBus")["subscriptionName"] == resources.EVENTS_SUBSCRIPTION
    assert module_params("serviceBus")["topicName"] == resources.EVENTS_TOPIC


def test_flex_consumption_app_and_its_hygiene() -> None:
    api = parse("app/api.bicep")
    site = api["resources"]["functionApp"]["config"]
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "runtimeName", "version": "runtimeVersion"}
    assert module_params("api")["runtimeName"] == "python" and module_params("api")["runtimeVersion"] == "3.11"
    assert config["scaleAndConcurrency"] == {"maximumInstanceCount": "maximumInstanceCount",
                                             "instanceMemoryMB": "instanceMemoryMB"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    siteconfig = site["properties"]["siteConfig"]
    assert siteconfig["ftpsState"] == "Disabled" and siteconfig["minTlsVersion"] == "1.2"
    assert siteconfig["http20Enabled"] is True and site["properties"]["httpsOnly"] is True
    policies = {r["config"]["name"]: r["config"]["properties"]["allow"] for r in api["resources"].values()
                if r["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"}
    assert policies == {"ftp": False, "scm": False}
    plan = api["resources"]["plan"]["config"]["sku"]
    assert plan == {"tier": "FlexConsumption", "name": "FC1"}
    tags = site["tags"]["function"]["parameters"]["arg_2"]
    assert tags == {"'azd-service-name'": "serviceName"} and module_params("api")["serviceName"] == "api"
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert re.search(r"services:\n  api:\n", azure_yaml) and "host: function" in azure_yaml


def test_azd_conventions() -> None:
    main = parse("main.bicep")
    assert main["globals"]["scope"]["value"] == "subscription"
    (allowed,) = [d["argument"] for d in main["parameters"]["location"]["decorators"] if d["type"] == "allowed"]
    assert {"westeurope", "northeurope", "eastus", "swedencentral"} <= set(allowed) and "chinaeast" not in allowed
    outputs = set(main["outputs"])
    assert {"AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_APP_NAME",
            "AZURE_EVENTGRID_SYSTEM_TOPIC_NAME", "AZURE_OUTBOUND_IP",
            "APPLICATIONINSIGHTS_CONNECTION_STRING"} <= outputs
    assert all(o.startswith(("AZURE_", "APPLICATIONINSIGHTS_", "SERVICE_")) for o in outputs)
    hook = (ROOT / "scripts" / "azd" / "postdeploy.sh").read_text()
    for used in set(re.findall(r"\$\{?(AZURE_[A-Z_]+)", hook)):
        assert used in outputs, f"postdeploy.sh reads {used}, which main.bicep does not output"
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(params) <= set(main["parameters"]), "main.parameters.json names a parameter main.bicep lacks"
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    abbrs = json.loads((INFRA / "abbreviations.json").read_text())
    for key in re.findall(r"abbrs\.(\w+)", (INFRA / "main.bicep").read_text()):
        assert key in abbrs, key


def test_key_vault_can_be_recreated_and_the_deployer_gets_operator_roles() -> None:
    vault = parse("app/keyvault.bicep")["resources"]["vault"]["config"]["properties"]
    assert vault["enableRbacAuthorization"] is True and vault["createMode"] == "createMode"
    main = parse("main.bicep")["parameters"]
    assert main["keyVaultPurgeProtection"]["default"] is False
    rbac = parse("app/rbac.bicep")
    roles = {k: v for k, v in rbac["variables"]["roles"]["value"].items()}
    by_principal: dict[str, set[str]] = {}
    for r in rbac["resources"].values():
        if r["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        props = body(r)["properties"]
        role_name = props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        role = role_name["operator"]["operands"]["operand_2"]
        by_principal.setdefault(props["principalId"], set()).add(role)
    assert by_principal["appPrincipalId"] == {"blobOwner", "queueContributor", "tableContributor",
                                              "keyVaultSecretsUser", "serviceBusSender", "monitoringPublisher"}
    assert {"keyVaultSecretsOfficer", "blobContributor"} <= by_principal["userPrincipalId"]
    assert set().union(*by_principal.values()) <= set(roles)
    assert body(parse("main.bicep")["modules"]["rbac"])["params"]["userPrincipalId"] == "principalId"


def test_diagnostic_settings_and_monitoring() -> None:
    diag = {}
    for path in bicep_files():
        for name, r in parse(str(path.relative_to(INFRA))).get("resources", {}).items():
            if r["type"] == "Microsoft.Insights/diagnosticSettings":
                diag[f"{path.stem}.{name}"] = r["config"]["scope"]
    assert diag == {"storage.blobDiagnostics": "blobServices", "storage.queueDiagnostics": "queueServices",
                    "storage.tableDiagnostics": "tableServices", "keyvault.vaultDiagnostics": "vault",
                    "servicebus.busDiagnostics": "namespace"}
    vault_logs = parse("app/keyvault.bicep")["resources"]["vaultDiagnostics"]["config"]["properties"]["logs"]
    assert vault_logs == [{"categoryGroup": "audit", "enabled": True}]
    appi = parse("app/monitoring.bicep")["resources"]["applicationInsights"]["config"]["properties"]
    assert appi["DisableLocalAuth"] is True and appi["WorkspaceResourceId"]


def test_vnet_option_gives_a_static_outbound_ip() -> None:
    vnet = parse("app/vnet.bicep")["resources"]
    assert vnet["publicIp"]["config"]["properties"]["publicIPAllocationMethod"] == "Static"
    (subnet,) = vnet["vnet"]["config"]["properties"]["subnets"]
    assert subnet["properties"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"
    assert "natGateway" in subnet["properties"]
    main = parse("main.bicep")
    assert main["parameters"]["vnetEnabled"]["default"] is False
    assert main["modules"]["network"]["config"]["condition"] == "vnetEnabled"
    assert module_params("api")["virtualNetworkSubnetId"] is None  # vnetEnabled ? network.outputs.appSubnetId : ''


def test_checkov_skips_are_justified_next_to_the_resource() -> None:
    skip = re.compile(r"//\s*checkov:skip=(CKV2?_AZURE_\d+)(:?)(.*)")
    found = []
    for path in bicep_files():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = skip.search(line)
            if not m:
                continue
            found.append(m.group(1))
            assert m.group(2) == ":" and len(m.group(3).strip()) >= 30, f"{path.name}:{i + 1}: skip without a reason"
            # checkov reads skips only inside the resource block: the nearest resource line above must open it.
            above = [x for x in lines[:i] if x.startswith("resource ")]
            assert above and lines.index(above[-1]) >= i - 8, f"{path.name}:{i + 1}: skip outside a resource block"
    assert found, "no skips at all: checkov would have failed on the justified exceptions"


def test_the_hook_lists_the_event_grid_triggers_with_the_system_python() -> None:
    """postdeploy.sh runs `python3 scripts/bindings.py eventgrid` on the deployer's machine: stdlib only."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-I", str(ROOT / "scripts" / "bindings.py"), "eventgrid"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.splitlines() == [f"{f} {c}" for f, c in bindings_module().event_grid_blob_triggers()]
    assert "intake_drop drop" in out.stdout.splitlines()
    bad = subprocess.run([sys.executable, "-I", str(ROOT / "scripts" / "bindings.py")], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr
