"""The deployment artefacts in deploy/ against promtool, the metric catalogue and each other.

A dashboard panel or an alert that names a metric the agent does not export stays silent in
production, which for a security monitor is the worst way to fail; so every metric name in the
dashboard, the rules and the rule tests is checked against ``agent.metrics.CATALOGUE``, and the
rules run under promtool's own unit tests. Grafana and Docker cannot run here, so the dashboard,
the unit file and the Dockerfile are checked structurally (and the unit with systemd-analyze).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "metasentry.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules" / "metasentry.rules.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "metasentry-overview.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
UNIT = DEPLOY / "systemd" / "metasentry.service"
DOCKERFILE = DEPLOY / "Dockerfile"
README = DEPLOY / "README.md"
ENSURE_PROMTOOL = REPO / "scripts" / "ensure-promtool.sh"

DATASOURCE_REFS = frozenset({"${datasource}", "$datasource", "${DS_PROMETHEUS}"})
MIN_SCHEMA_VERSION = 38  # Grafana 10

#: what prometheus_client's default process and platform collectors export
STANDARD_METRICS = frozenset({
    "up",
    "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
    "process_virtual_memory_bytes", "process_resident_memory_bytes",
    "process_start_time_seconds",
    "python_info", "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total", "python_gc_collections_total",
})

# ---------------------------------------------------------------- PromQL metric names

_PROMQL_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan",
})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
# An identifier not glued to a number (5m, 1e3), a variable ($alpha) or another name.
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?")


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = _STRINGS.sub('""', promql)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {
        match.group(1) for match in _IDENTIFIER.finditer(text)
        if match.group(2) is None and match.group(1).lower() not in _PROMQL_KEYWORDS
    }


@pytest.mark.parametrize(("promql", "expected"), [
    ('sum by (source) (rate(metasentry_x_total{source=~"$source"}[$__rate_interval]))',
     {"metasentry_x_total"}),
    ("a / on (job) group_left (sha256) b offset 10m > 1e3 and bool c", {"a", "b", "c"}),
    ('label_replace(up, "dst", "$1", "src", "(.*)") * vector($alpha)', {"up"}),
    ("histogram_quantile(0.95, sum(rate(h_bucket[5m])) by (le)) > Inf", {"h_bucket"}),
    ("level:metric:rate5m{a='b'} unless time() - x", {"level:metric:rate5m", "x"}),
])
def test_metric_names_extracts_selectors_only(promql: str, expected: set[str]) -> None:
    assert metric_names(promql) == expected


# ---------------------------------------------------------------- loading the artefacts

@functools.cache
def load_yaml(path: Path) -> Any:
    """Parsed once per file: the rule tests are large enough for PyYAML to take a while."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded into collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    queries = [
        (f"panel {panel['id']} ({panel.get('title', '')}) target {target.get('refId')}",
         target["expr"])
        for panel in iter_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        selector = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", query)
        if selector:  # label_values(label) alone selects no metric
            queries.append((f"variable {variable['name']}", selector.group(1)))
    return queries


def substitute_variables(promql: str, dashboard: Mapping[str, Any]) -> str:
    """A dashboard query as Prometheus would receive it for one plausible choice of variables."""
    values = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h",
              "__range_s": "3600", "__interval_ms": "60000"}
    for variable in dashboard["templating"]["list"]:
        current = variable.get("current") or {}
        values.setdefault(variable["name"], str(current.get("value") or ".*"))

    def value_of(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value_of, promql)


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules() if "alert" in rule}


# ---------------------------------------------------------------- promtool

@pytest.fixture(scope="session")
def promtool() -> Path:
    """A working promtool from scripts/ensure-promtool.sh (which may download it once)."""
    try:
        found = subprocess.run([str(ENSURE_PROMTOOL)], capture_output=True, text=True,
                               timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"promtool cannot be obtained: {exc}")
    if found.returncode != 0:
        reason = (found.stderr.strip().splitlines() or ["no reason given"])[-1]
        pytest.skip(f"promtool cannot be obtained: {reason}")
    return Path(found.stdout.strip().splitlines()[-1])


def run_promtool(promtool: Path, *args: str) -> str:
    result = subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_rules_pass_promtool_check(promtool: Path) -> None:
    output = run_promtool(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert f"{len(rules())} rules found" in output


def test_rule_unit_tests_pass(promtool: Path) -> None:
    run_promtool(promtool, "test", "rules", str(RULE_TESTS))


def test_prometheus_config_passes_promtool_check(promtool: Path) -> None:
    run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))


def test_dashboard_queries_are_valid_promql(promtool: Path, tmp_path: Path) -> None:
    dashboard = load_dashboard()
    queries = dashboard_queries(dashboard)
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query:{index}", "expr": substitute_variables(expr, dashboard)}
        for index, (_, expr) in enumerate(queries)
    ]}]}), encoding="utf-8")
    output = run_promtool(promtool, "check", "rules", str(rule_file))
    assert f"{len(queries)} rules found" in output


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert load_yaml(RULE_TESTS)["rule_files"] == [RULES.name]
    assert alert_names() - firing == set(), "alerts never shown to fire"
    assert alert_names() - silent == set(), "alerts never shown to stay silent"
    assert (firing | silent) - alert_names() == set(), "tests of alerts that do not exist"


def test_every_alert_has_severity_summary_and_description() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["alert"].startswith("MetaSentry"), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


# ---------------------------------------------------------------- metric catalogue

@pytest.fixture(scope="session")
def catalogue() -> Mapping[str, object]:
    try:
        from agent.metrics import CATALOGUE
    except ModuleNotFoundError as exc:
        if exc.name not in {"agent", "agent.metrics"}:
            raise
        pytest.skip("agent.metrics (the metric catalogue) is not importable")
    return CATALOGUE


def scraped_names(catalogue: Mapping[str, object]) -> set[str]:
    """Series names as Prometheus stores them, from the catalogue's name -> kind."""
    names: set[str] = set()
    for name, kind in catalogue.items():
        kind_name = str(getattr(kind, "value", kind)).lower()
        names.add(name)
        if kind_name == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind_name == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
        elif kind_name == "info" and not name.endswith("_info"):
            names.add(f"{name}_info")
    return names


def rule_expressions() -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]


def rule_test_expressions() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for number, case in enumerate(load_yaml(RULE_TESTS)["tests"]):
        found += [(f"test {number} input", series["series"])
                  for series in case.get("input_series", [])]
        for check in case.get("promql_expr_test", []):
            found.append((f"test {number} expr", check["expr"]))
            found += [(f"test {number} sample", sample["labels"])
                      for sample in check.get("exp_samples", [])]
    return found


ARTEFACTS = {
    "dashboard": lambda: dashboard_queries(load_dashboard()),
    "rules": rule_expressions,
    "rule tests": rule_test_expressions,
}


@pytest.mark.parametrize("artefact", sorted(ARTEFACTS))
def test_metric_names_exist(artefact: str, catalogue: Mapping[str, object]) -> None:
    known = scraped_names(catalogue) | recorded_names() | STANDARD_METRICS
    expressions = ARTEFACTS[artefact]()
    assert expressions, f"no expressions found in the {artefact}"
    unknown = {
        f"{where}: {name}"
        for where, expr in expressions
        for name in metric_names(expr)
        if name not in known
    }
    assert unknown == set(), f"metrics missing from agent.metrics.CATALOGUE in the {artefact}"


def test_dashboard_charts_every_catalogued_metric(catalogue: Mapping[str, object]) -> None:
    charted = {name for _, expr in dashboard_queries(load_dashboard())
               for name in metric_names(expr)}
    uncharted = {name for name in catalogue
                 if not any(series.startswith(name) for series in charted)}
    assert uncharted == set(), "catalogued metrics no dashboard panel shows"


# ---------------------------------------------------------------- Grafana

def test_dashboard_is_valid_grafana_10_json() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "metasentry-overview"
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= MIN_SCHEMA_VERSION
    panel_ids = [panel["id"] for panel in iter_panels(dashboard["panels"])]
    assert len(panel_ids) == len(set(panel_ids)), "duplicate panel ids"
    for panel in iter_panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), f"duplicate refId in {panel['title']}"


def test_dashboard_uses_a_datasource_variable() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    uses_input = "${DS_PROMETHEUS}" in DASHBOARD.read_text(encoding="utf-8")
    assert uses_input or variables["datasource"]["type"] == "datasource"
    if not uses_input:
        assert variables["datasource"]["query"] == "prometheus"
    holders = [("variable " + v["name"], v) for v in dashboard["templating"]["list"]
               if v.get("type") == "query"]
    for panel in iter_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        holders.append((panel["title"], panel))
        holders += [(f"{panel['title']} {t['refId']}", t) for t in panel.get("targets", [])]
    for where, holder in holders:
        datasource = holder.get("datasource")
        uid = datasource.get("uid") if isinstance(datasource, dict) else datasource
        assert uid in DATASOURCE_REFS, f"{where} uses data source {datasource!r}"


def test_dashboard_rates_follow_the_scrape_interval() -> None:
    """rate() over a fixed window breaks when zoomed out; $__rate_interval does not."""
    for where, expr in dashboard_queries(load_dashboard()):
        for window in re.findall(r"\b(?:rate|increase|irate)\s*\([^\[]*\[([^\]]*)\]", expr):
            assert window in {"$__rate_interval", "$__range"}, f"{where}: [{window}]"


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    datasources = [ds for path in (PROVISIONING / "datasources").glob("*.yaml")
                   for ds in load_yaml(path)["datasources"]]
    assert [ds["type"] for ds in datasources] == ["prometheus"]
    providers = [p for path in (PROVISIONING / "dashboards").glob("*.yaml")
                 for p in load_yaml(path)["providers"]]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    path = providers[0]["options"]["path"]
    assert Path(path).is_absolute()
    # The provider's path is where deploy/grafana/dashboards is mounted; the README says how.
    mount = re.escape(f"deploy/grafana/dashboards:{path}") + r"(?=[:\"\s])"
    assert re.search(mount, README.read_text(encoding="utf-8")), f"no mount of {path} in README"
    assert sorted(DASHBOARDS.glob("*.json")) == [DASHBOARD]


# ---------------------------------------------------------------- systemd

def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values; systemd allows a key several times, so keep them all."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_is_hardened() -> None:
    service = {key: values[-1] for key, values in unit_settings(UNIT)["Service"].items()}
    yes = {"yes", "true", "on", "1"}
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    # The agent pings every WatchdogSec / 2; a period under a minute would restart an agent
    # whose commit waits, legitimately, for the store's deadline.
    assert service["WatchdogSec"].endswith("s") and int(service["WatchdogSec"][:-1]) >= 60
    assert service["User"] not in {"", "root", "0"} and "DynamicUser" not in service
    assert service["UMask"] == "0077"
    assert service["NoNewPrivileges"] in yes
    assert service["ProtectSystem"] in {"full", "strict"}
    assert service["ProtectHome"] in {"read-only", "yes", "tmpfs"}
    assert service["PrivateTmp"] in yes
    assert service["StateDirectory"] == "metasentry"
    assert service["Restart"] == "on-failure"
    assert service["TimeoutStopSec"] == "30"
    assert service["EnvironmentFile"].lstrip("-").startswith("/etc/metasentry/")
    assert service["ExecStart"].split() == [
        "metasentry", "run", "--config", "/etc/metasentry/agent.yaml"]
    assert "METASENTRY_API_TOKEN" not in service.get("Environment", "")
    assert unit_settings(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart's program exists; metasentry is not installed system-wide.
    text = UNIT.read_text(encoding="utf-8")
    checked = tmp_path / UNIT.name
    checked.write_text(text.replace("ExecStart=metasentry ", "ExecStart=/bin/true "),
                       encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(checked)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def test_dockerfile_runs_as_non_root_with_exec_form_entrypoint() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) >= 2, "expected a multi-stage build"
    final = instructions[stages[-1]:]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    entrypoint = [json.loads(arguments) for keyword, arguments in final
                  if keyword == "ENTRYPOINT"]
    assert len(entrypoint) == 1 and isinstance(entrypoint[0], list)
    assert "metasentry" in entrypoint[0]
    assert all(isinstance(json.loads(arguments), list)
               for keyword, arguments in final if keyword == "CMD")
    exposed = {port for keyword, arguments in final if keyword == "EXPOSE"
               for port in arguments.split()}
    assert {"8080", "9108"} <= exposed


def test_dockerfile_copies_only_what_exists() -> None:
    for keyword, arguments in dockerfile_instructions(DOCKERFILE):
        if keyword != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _ = arguments.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


# ---------------------------------------------------------------- ensure-promtool.sh

def test_ensure_promtool_prefers_a_working_promtool_env(promtool: Path) -> None:
    found = subprocess.run([str(ENSURE_PROMTOOL)], capture_output=True, text=True, timeout=60,
                           check=False, env={"PATH": "/usr/bin:/bin", "PROMTOOL": str(promtool)})
    assert (found.returncode, found.stdout) == (0, f"{promtool}\n")


def test_ensure_promtool_rejects_a_broken_promtool_env(tmp_path: Path) -> None:
    broken = tmp_path / "promtool"
    broken.write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")
    broken.chmod(0o755)
    found = subprocess.run([str(ENSURE_PROMTOOL)], capture_output=True, text=True, timeout=60,
                           check=False, env={"PATH": "/usr/bin:/bin", "PROMTOOL": str(broken)})
    assert found.returncode != 0 and found.stdout == ""
    assert len(found.stderr.strip().splitlines()) == 1 and str(broken) in found.stderr
