"""The KQL of the alert rules, the workbook and the saved queries (infra/queries/*.kql).

Checked two ways without Azure: (1) Microsoft's Kusto language service (npm @kusto/language-service-next,
installed by `make infra-tools` into tools/kusto) parses and binds every query against the Application
Insights table schema, so a syntax error, an unknown column or a wrong function is caught; (2) every metric
and customDimensions key a query names is one the code emits: the metrics are recorded here through
shared/metrics.py into the in-memory OpenTelemetry pipeline and their real names and attribute keys read back.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared import metrics
from shared.observability import logs, setup, tracing
from tests.infra_bicep import INFRA, ROOT, bicep_files, parse

QUERIES = sorted((INFRA / "queries").glob("*.kql"))
KUSTO = ROOT / "tools" / "kusto"
TABLES = ("customMetrics", "traces", "exceptions", "dependencies", "requests")

# Metrics other branches add (SLA: "expected file did not arrive"; trust: secret/certificate expiry), with
# the dimensions the queries rely on. Each entry must go once the code emits the metric: the test below then
# fails, and the metric's dimensions are checked against what the code records like every other one.

# One sample call per record_* function of shared/metrics.py.
SAMPLES: dict[str, Callable[[], None]] = {
    "record_ingest": lambda: metrics.record_ingest("acme", "sftp", 10, 0.5),
    "record_transfer": lambda: metrics.record_transfer("acme", "sftp", 0.5),
    "record_failure": lambda: metrics.record_failure("acme", "sftp", "timeout"),
    "record_job_done": lambda: metrics.record_job_done("acme", "failed", 3.0),
    "record_queue_age": lambda: metrics.record_queue_age("file-landed", 0.0),
    "record_dead_lettered": lambda: metrics.record_dead_lettered("file-landed", "undecodable"),
    "record_poison_depth": lambda: metrics.record_poison_depth("file-landed-poison", 2),
    "record_breaker_state": lambda: metrics.record_breaker_state("acme", "sftp", "open"),
    "record_sla_missed": lambda: metrics.record_sla_missed("acme", "orders_*.csv"),
    "record_sla_recovered": lambda: metrics.record_sla_recovered("acme", "orders_*.csv"),
    "record_secret_expiry": lambda: metrics.record_secret_expiry("acme-sftp-key", 12.5),
    "record_delivery_status": lambda: metrics.record_delivery_status("acme", "bounced"),
}


def emitted_metrics() -> dict[str, set[str]]:
    """Metric name -> attribute keys, as the code records them (one sample call per record_* function)."""
    capture = setup.for_tests()
    for sample in SAMPLES.values():
        sample()
    shape: dict[str, set[str]] = {}
    for point in capture.collect_metrics():
        shape.setdefault(point.name, set()).update(point.attributes)
    return shape


def span_attribute_keys() -> set[str]:
    """The attribute names shared/observability/tracing.py defines for spans (wharf.*, file.*, server.*, ...)."""
    return {v for k, v in vars(tracing).items() if k.isupper() and isinstance(v, str) and "." in v}


def log_keys() -> set[str]:
    """The fields Wharf puts on every log record (traces.customDimensions)."""
    return set(logs._CONTEXT_FIELDS)


def kusto_check(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    node = shutil.which("node")
    assert node, "node is needed for the KQL check (scripts/install-system-deps.sh installs it)"
    assert (KUSTO / "node_modules" / "@kusto" / "language-service-next").is_dir(), \
        "the Kusto language service is not installed: run `make infra-tools`"
    out = subprocess.run([node, str(KUSTO / "check-kql.js"), *map(str, paths)], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def named_metrics(text: str) -> set[str]:
    names = set(re.findall(r'name\s*==\s*"(wharf\.[^"]+)"', text))
    for group in re.findall(r"name\s+in\s*\(([^)]*)\)", text):
        names |= set(re.findall(r'"(wharf\.[^"]+)"', group))
    return names


def named_dimensions(text: str) -> set[str]:
    return set(re.findall(r"customDimensions\.(\w+)", text)) | set(re.findall(r'customDimensions\["([^"]+)"\]', text))


@pytest.fixture(scope="module")
def kusto_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """One run of the language service (it takes seconds to load) over every query plus a broken one."""
    bad = tmp_path_factory.mktemp("kql") / "bad.kql"
    bad.write_text('customMetrics\n| where nme == "wharf.failures"\n| summarize sum(valueSum) by bin(timestamp, 1h\n')
    return {Path(f).name: d for f, d in kusto_check([*QUERIES, bad]).items()}


def test_every_query_parses_and_binds_against_the_app_insights_schema(
        kusto_results: dict[str, list[dict[str, Any]]]) -> None:
    assert len(QUERIES) >= 15 and {p.name for p in QUERIES} <= set(kusto_results)
    problems = {name: d for name, d in kusto_results.items()
                if name != "bad.kql" and any(x["severity"] == "Error" for x in d)}
    assert not problems, json.dumps(problems, indent=1)


def test_the_kql_check_catches_a_broken_query(kusto_results: dict[str, list[dict[str, Any]]]) -> None:
    messages = " ".join(d["message"] for d in kusto_results["bad.kql"])
    assert "nme" in messages and "Expected: )" in messages


def test_every_metric_and_dimension_a_query_names_is_one_the_code_emits() -> None:
    emitted = emitted_metrics()
    assert {metrics.FILES_INGESTED, metrics.JOB_DURATION, metrics.BREAKER_STATE} <= set(emitted)
    spans, log_fields = span_attribute_keys(), log_keys()
    for path in QUERIES:
        text = path.read_text()
        tables = {t for t in TABLES if re.search(rf"\b{t}\b", text)}
        assert tables, f"{path.name} reads none of {TABLES}"
        names = named_metrics(text)
        unknown = names - set(emitted)
        assert not unknown, f"{path.name} names metrics the code does not emit: {unknown}"
        allowed: set[str] = set()
        for name in names:
            allowed |= emitted.get(name, set())
        if tables & {"dependencies", "requests", "exceptions"}:
            allowed |= spans
        if "traces" in tables:
            allowed |= log_fields
        extra = named_dimensions(text) - allowed
        assert not extra, f"{path.name} reads dimensions the code does not set: {extra} (allowed: {sorted(allowed)})"
        if "customMetrics" in tables:
            assert names, f"{path.name} reads customMetrics without naming a metric"


def test_samples_cover_every_record_function() -> None:
    record_functions = {n for n, f in inspect.getmembers(metrics, inspect.isfunction)
                        if n.startswith("record_") and f.__module__ == metrics.__name__}
    assert record_functions == set(SAMPLES), "add a sample call for each new record_* function"


def _loaded_files() -> dict[str, str]:
    """infra/queries files loaded with loadTextContent, by Bicep file."""
    out = {}
    for path in bicep_files():
        for rel in re.findall(r"loadTextContent\('([^']+)'\)", path.read_text()):
            out[str((path.parent / rel).resolve().relative_to(INFRA))] = path.name
    return out


def test_every_query_file_is_deployed_and_every_loaded_file_exists() -> None:
    loaded = _loaded_files()
    assert {f"queries/{p.name}" for p in QUERIES} == set(loaded)
    kinds = {name.split("/")[1].split("-")[0] for name in loaded}
    assert kinds == {"alert", "workbook", "saved"}
    for name, bicep in loaded.items():
        prefix = name.split("/")[1].split("-")[0]
        assert bicep == {"alert": "alerts.bicep", "workbook": "workbook.bicep", "saved": "workbook.bicep"}[prefix]


def test_alert_parameters_replace_lines_that_exist() -> None:
    """alerts.bicep replaces a `let` line with the parameter's value: the line must be in the file verbatim."""
    text = (INFRA / "app" / "alerts.bicep").read_text()
    replaced = re.findall(r"replace\(loadTextContent\('\.\./(queries/[^']+)'\), '([^']+)', '([^']+)'\)", text)
    assert len(replaced) == 2
    for rel, old, new in replaced:
        assert old in (INFRA / rel).read_text(), f"{rel} has no line {old!r}: the parameter would be ignored"
        assert old.split("=")[0] == new.split("=")[0] and "${" in new


def test_alert_rules_cover_what_operators_are_paged_for() -> None:
    alerts = parse("app/alerts.bicep")
    rules = {r["name"]: r for r in alerts["variables"]["rules"]["value"]}
    assert set(rules) == {"failed-jobs", "poison-messages", "breaker-open", "function-failures", "secret-expiry",
                          "sla-missed"}
    assert rules["failed-jobs"]["window"] == "PT15M" and rules["failed-jobs"]["threshold"] == "failedJobsThreshold"
    for name, rule in rules.items():
        assert rule["dimensions"], name
        measure = rule["measure"]
        query = rule["query"]
        source = query if isinstance(query, str) and query.endswith("Query") else None
        if measure and source is None:
            rel = query["function"]["parameters"]["file_path"][3:]
            assert re.search(rf"\b{measure}\b", (INFRA / rel).read_text()), (name, measure)
    group = alerts["resources"]["actionGroup"]["config"]
    assert group["location"] == "Global"
    rule_resource = alerts["resources"]["alertRules"]["config"]["config"]
    (action,) = rule_resource["properties"]["actions"]["actionGroups"]
    assert action["operator"]["operands"] == {"operand_1": "actionGroup", "operand_2": "id"}
    assert parse("main.bicep")["parameters"]["alertEmail"]["default"] == ""
    assert json.loads((INFRA / "main.parameters.json").read_text())["parameters"]["alertEmail"]["value"] == \
        "${WHARF_ALERT_EMAIL}"


def test_workbook_shows_every_workbook_query() -> None:
    workbook = parse("app/workbook.bicep")
    items = workbook["variables"]["workbookContent"]["value"]["items"]
    queries = [i["content"]["query"]["function"]["parameters"]["file_path"] for i in items if i["type"] == 3]
    assert sorted(queries) == sorted(f"../queries/{p.name}" for p in QUERIES if p.name.startswith("workbook-"))
    assert all(i["content"]["timeContextFromParameter"] == "TimeRange" for i in items if i["type"] == 3)
    saved = [r for r in workbook["resources"].values()
             if r["type"] == "Microsoft.OperationalInsights/queryPacks/queries"]
    assert len(saved) == 2


@pytest.mark.parametrize("path", [p for p in QUERIES if p.name.startswith(("alert-", "saved-"))], ids=lambda p: p.name)
def test_queries_start_with_a_comment_saying_what_they_find(path: Path) -> None:
    assert path.read_text().startswith("// ")
