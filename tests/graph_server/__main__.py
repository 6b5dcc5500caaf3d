"""Run the Graph test server on its own: `python -m tests.graph_server --port 8765 [--demo]`.

Point Wharf at it with GRAPH_BASE_URL=http://127.0.0.1:8765/v1.0 and WHARF_GRAPH_LOCAL_TOKEN=<token>.
Seed mail over the admin API, e.g.

    curl -X POST http://127.0.0.1:8765/_admin/users/ingest@wharf.test/messages -d '{"folder": "Inbox/Partners/Demo",
         "from": "ops@demo-partner.example", "subject": "Invoices",
         "attachments": [{"name": "invoices.csv", "contentBase64": "YSxiCjEsMgo="}]}'

GET /_admin/requests shows the request log; POST /_admin/faults injects failures.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.graph_server.model import file_attachment
from tests.graph_server.server import TEST_TOKEN, GraphTestServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.graph_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=TEST_TOKEN, help="bearer token to require ('' accepts any request)")
    parser.add_argument("--demo", action="store_true", help="seed ingest@wharf.test with a demo partner mail")
    args = parser.parse_args(argv)

    server = GraphTestServer(host=args.host, port=args.port, token=args.token or None).start()
    if args.demo:
        user = server.add_user("ingest@wharf.test")
        user.add_message("Inbox/Partners/Demo", subject="Invoices for today", sender="ops@demo-partner.example",
                         attachments=[file_attachment("invoices-demo.csv", b"invoice,amount\nINV-1,10.00\n",
                                                      content_type="text/csv")])
    print(f"Graph test server on {server.base_url} (token: {args.token or 'any'})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
