"""Run by tests/integration/test_plugins.py in a subprocess whose PYTHONPATH holds the installed example plugin:
hand files over for an outbound partner whose route uses the plugin's destination kind (and its transform and
validator), run process_file's activities against Azurite, print what happened as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from shared.bootstrap import build_services
from shared.services import process
from shared.services.drop import OUTBOUND, land_drop


def main(container: str, partner: str, *names_and_data: str) -> None:
    services = build_services()
    services.ensure_resources()
    services.blobs.ensure_containers([container])
    out: list[dict[str, Any]] = []
    for name, data in zip(names_and_data[::2], names_and_data[1::2], strict=True):
        services.blobs.upload_stream(container, f"{partner}/{name}", [data.encode()])
        dropped = land_drop(services, container=container, blob_path=f"{partner}/{name}", handover=OUTBOUND)
        assert dropped is not None and dropped.ref is not None, dropped
        ref = dropped.ref
        process.start_job(services, ref)
        validation = process.validate_and_transform(services, ref)
        entry: dict[str, Any] = {"job_id": ref["job_id"], "valid": validation["valid"],
                                 "reason": validation.get("reason", "")}
        if validation["valid"]:
            plan = process.plan_routes(services, ref)
            entry["routed"] = [process.route_file(services, {**ref, "output": validation["output"],
                                                             "route": plan["route"], "destination": dest,
                                                             "index": i})
                               for i, dest in enumerate(plan["destinations"])]
            entry["deliveries"] = [(d.kind, d.state.value, d.remote_path)
                                   for d in services.deliveries.for_job(ref["job_id"])]
        out.append(entry)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
