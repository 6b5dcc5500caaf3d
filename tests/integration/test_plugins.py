"""Plugins from a real installed package: tests/plugins/wharf_plugin_example is pip-installed into a folder of
its own (never the project's environment) and put on PYTHONPATH of a subprocess, which finds its entry points,
lists them with `wharf plugins list`, and routes files through its destination kind, transform and validator
against Azurite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import azurite_connection_string

pytestmark = [pytest.mark.azurite]

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "plugins" / "wharf_plugin_example"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(PLUGIN)], check=True, capture_output=True,
                   timeout=120)
    assert (target / "wharf_plugin_example").is_dir()
    return target


def run(args: list[str], *, path: Path | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    pythonpath = os.pathsep.join([*([str(path)] if path else []), str(ROOT)])
    full = {**os.environ, **(env or {}), "PYTHONPATH": pythonpath, "OTEL_SDK_DISABLED": "true"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=120, check=False)


def test_wharf_plugins_list_shows_the_plugins_kinds_with_their_package_and_the_one_that_does_not_load(
        plugin_path: Path) -> None:
    done = run(["-m", "shared.cli", "plugins", "list"], path=plugin_path)
    assert done.returncode == 0, done.stderr
    lines = {tuple(line.split()[:2]): line for line in done.stdout.splitlines()[1:]}
    assert "wharf-plugin-example 0.1.0" in lines[("destination", "example-dir")]
    assert "wharf-plugin-example 0.1.0" in lines[("transform", "example_upper")]
    assert "wharf-plugin-example 0.1.0" in lines[("validator", "example_no_tabs")]
    assert lines[("destination", "sftp")].split()[2] == "wharf"
    broken = lines[("destination", "broken-kind")]
    assert "NOT LOADED (wharf_plugin_example.missing:Nothing): ModuleNotFoundError" in broken
    listed = json.loads(run(["-m", "shared.cli", "plugins", "list", "--json"], path=plugin_path).stdout)
    assert {"kind": "destination", "name": "example-dir", "source": "wharf-plugin-example 0.1.0",
            "target": "wharf_plugin_example:DirectoryDestination", "error": ""} in listed
    # Without the package the same command lists only the built-ins.
    bare = run(["-m", "shared.cli", "plugins", "list"], path=None)
    assert bare.returncode == 0 and "example-dir" not in bare.stdout


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    partner = f"pl{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "delivered"
    folder.mkdir()
    path = tmp_path / "partners.yaml"
    path.write_text(f"""partners:
  - id: {partner}
    name: Plugin test partner
    outbound:
      processing:
        rules:
          - match: "*.txt"
            transform: {{ name: example_upper }}
            validators: [{{ name: example_no_tabs }}]
      routes:
        - name: to-folder
          default: true
          destinations:
            - {{ kind: example-dir, folder: "{folder}" }}
""")
    yield path, folder, partner


def test_a_file_is_routed_through_the_plugins_destination_transform_and_validator(
        plugin_path: Path, catalogue: tuple[Path, Path, str], azurite: str) -> None:
    path, folder, partner = catalogue
    tag = uuid.uuid4().hex[:10]
    container = f"outbound-pl{tag}"
    env = {"AzureWebJobsStorage": azurite_connection_string(), "WHARF_TABLE_PREFIX": f"pl{tag}",
           "WHARF_CATALOG_PATH": str(path), "LANDED_QUEUE": f"landed-pl{tag}", "POLL_QUEUE": f"poll-pl{tag}",
           "WHARF_EVENTS_QUEUE": f"events-pl{tag}"}
    try:
        done = run(["tests/plugins/route_through_plugin.py", container, partner, "note.txt", "hello plugin\n",
                    "tabbed.txt", "a\tb\n"], path=plugin_path, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        good, tabbed = json.loads(done.stdout.splitlines()[-1])
        assert (folder / "note.txt").read_bytes() == b"HELLO PLUGIN\n"  # transformed, then delivered by the plugin
        assert good["routed"][0]["kind"] == "example-dir" and good["routed"][0]["target"] == f"dir:{folder}/note.txt"
        assert good["deliveries"] == [["example-dir", "SENT", f"dir:{folder}/note.txt"]]
        assert not tabbed["valid"] and "example_no_tabs: tabbed.txt contains a tab" in tabbed["reason"]
        assert sorted(p.name for p in folder.iterdir()) == ["note.txt"]
        # The same catalogue where the plugin is not installed: a catalogue error naming the kind.
        bare = run(["-m", "shared.cli", "catalog", "validate", str(path)], path=None)
        assert bare.returncode == 1
        assert "unknown destination kind 'example-dir'" in bare.stderr
        assert "unknown validator 'example_no_tabs'" in bare.stderr
    finally:
        _cleanup(container, f"pl{tag}", [env["LANDED_QUEUE"], env["POLL_QUEUE"], env["WHARF_EVENTS_QUEUE"]])


def _cleanup(container: str, prefix: str, queues: list[str]) -> None:
    from azure.core.exceptions import AzureError
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    conn = azurite_connection_string()
    try:
        BlobServiceClient.from_connection_string(conn).delete_container(container)
        tables = TableServiceClient.from_connection_string(conn)
        for table in tables.list_tables():
            if table.name.startswith(prefix):
                tables.delete_table(table.name)
        service = QueueServiceClient.from_connection_string(conn)
        for queue in queues:
            service.delete_queue(queue)
    except AzureError:
        pass
