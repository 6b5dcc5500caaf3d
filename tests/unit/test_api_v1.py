"""API v1 through dispatch over fakes: problems for bad input (never a 500), paging, partners, ledger, uploads
and partner keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from shared.api.legacy import legacy_jobs
from shared.domain.delivery import Delivery, DeliveryState
from shared.domain.jobs import FileTransfer
from shared.domain.ledger import BreakerRecord, BreakerState, LedgerEntry, LedgerState
from shared.services.partner_keys import create_key, revoke_key
from tests.api_world import ApiWorld

PROBLEM = "application/problem+json"


@pytest.fixture
def w() -> ApiWorld:
    return ApiWorld()


def test_legacy_jobs_limit_abc_is_a_400_problem_not_a_500(w: ApiWorld) -> None:
    # Regression: GET /api/jobs?limit=abc raised ValueError in int() (a 500).
    r = legacy_jobs(w.services, {"limit": "abc"})
    assert r.status == 400 and r.content_type == PROBLEM
    body = json.loads(r.read())
    assert body["parameter"] == "limit" and "limit" in body["detail"]
    assert "Deprecation" in r.headers
    ok = legacy_jobs(w.services, {"limit": "2"})
    assert ok.status == 200 and ok.headers["Deprecation"].startswith("@")


def test_legacy_jobs_reads_the_index_newest_first_never_the_job_table(w: ApiWorld,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [w.job(partner="acme", file_name=f"f{i}.csv", status="COMPLETED" if i % 2 else "FAILED") for i in range(5)]
    w.job(partner="globex")

    def scan(**_: object) -> None:
        raise AssertionError("the legacy route scanned the job table")

    monkeypatch.setattr(w.jobs, "list_jobs", scan)
    r = legacy_jobs(w.services, {"partner": "acme", "status": "COMPLETED", "limit": "5"})
    assert r.status == 200, r.read()
    assert [j["job_id"] for j in json.loads(r.read())] == [ids[3], ids[1]]  # newest first, filtered
    assert len(json.loads(legacy_jobs(w.services, {"limit": "3"}).read())) == 3


@pytest.mark.parametrize(("query", "param"), [
    ({"limit": "abc"}, "limit"), ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
    ({"status": "DONE"}, "status"), ({"type": "FTP"}, "type"), ({"since": "yesterday"}, "since"),
    ({"since": "2026-01-01T00:00:00"}, "since"), ({"colour": "red"}, "colour"),
    ({"continuation": "!!notatoken"}, "continuation"),
    ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
])
def test_bad_job_list_parameters_are_400_naming_the_parameter(w: ApiWorld, query: dict[str, str],
                                                              param: str) -> None:
    r = w.call("GET", "/jobs", query)
    assert r.status == 400 and r.content_type == PROBLEM
    body = json.loads(r.read())
    assert body["parameter"] == param and param in body["detail"] and body["status"] == 400


def test_jobs_page_newest_first_with_continuation_and_filters(w: ApiWorld) -> None:
    ids = [w.job(file_name=f"inv-{i}.csv") for i in range(7)]
    other = w.job(partner="globex", file_name="x.csv", status="FAILED")
    seen: list[str] = []
    token: str | None = None
    while True:
        code, body = w.json("GET", "/jobs", {"partner": "acme", "limit": "3",
                                              **({"continuation": token} if token else {})})
        assert code == 200
        seen += [j["job_id"] for j in body["items"]]
        token = body["continuation"]
        if token is None:
            break
    assert seen == list(reversed(ids))
    code, body = w.json("GET", "/jobs", {"status": "FAILED"})
    assert [j["job_id"] for j in body["items"]] == [other]
    code, body = w.json("GET", "/jobs", {"file_prefix": "inv-3"})
    assert [j["job_id"] for j in body["items"]] == [ids[3]]
    code, first = w.json("GET", "/jobs", {"limit": "2"})
    r = w.call("GET", "/jobs", {"limit": "2", "partner": "globex", "continuation": first["continuation"]})
    assert r.status == 400 and "other filters" in json.loads(r.read())["detail"]


def test_credentials_are_required_and_checked(w: ApiWorld) -> None:
    r = w.call("GET", "/jobs", key=False)
    assert r.status == 401 and r.content_type == PROBLEM and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = w.call("GET", "/jobs", key=False, headers={"x-functions-key": "wrong"})
    assert r.status == 401 and "function key" in json.loads(r.read())["detail"]
    assert w.call("GET", "/openapi.json", key=False).status == 200


def test_unknown_routes_and_methods_are_problems(w: ApiWorld) -> None:
    assert w.call("GET", "/nothing/here").status == 404
    r = w.call("DELETE", "/jobs")
    assert r.status == 405 and r.headers["Allow"] == "GET"
    code, body = w.json("GET", "/jobs/job-nope")
    assert code == 404 and body["parameter"] == "job_id"


def test_job_detail_has_validation_errors_and_links(w: ApiWorld) -> None:
    job_id = w.job(status="RUNNING")
    w.jobs.append(job_id, "step.failed", {"step": "validate", "reason": "validation failed", "report": {
        "errors": [{"row": 2, "line": 3, "column": 4, "field": "currency", "message": "not ISO 4217"}]}})
    code, body = w.json("GET", f"/jobs/{job_id}")
    assert code == 200
    assert body["validation_errors"] == [{"row": 2, "line": 3, "column": 4, "field": "currency",
                                          "message": "not ISO 4217"}]
    assert body["links"]["report"] == f"/api/v1/jobs/{job_id}/report"


def test_report_and_content_stream_the_blobs(w: ApiWorld) -> None:
    job_id = w.job()
    w.blobs.upload_stream("inbound", "acme/a.csv", [b"a,b\n", b"1,2\n"])
    w.jobs.append(job_id, "file.landed", {"blob_path": "inbound/acme/a.csv", "bytes": 8})
    w.blobs.upload_stream("reports", "acme/r.json", [b'{"valid": false}'])
    w.jobs.append(job_id, "step.failed", {"step": "validate", "reason": "x", "report_path": "reports/acme/r.json"})
    r = w.call("GET", f"/jobs/{job_id}/report")
    assert r.status == 200 and not isinstance(r.body, bytes) and r.read() == b'{"valid": false}'
    r = w.call("GET", f"/jobs/{job_id}/content", {"which": "raw"})
    assert r.status == 200 and r.read() == b"a,b\n1,2\n" and 'filename="a.csv"' in r.headers["Content-Disposition"]
    assert w.call("GET", f"/jobs/{job_id}/content", {"which": "output"}).status == 404
    assert json.loads(w.call("GET", f"/jobs/{job_id}/content", {"which": "zip"}).read())["parameter"] == "which"


def test_partners_breakers_and_poll(w: ApiWorld) -> None:
    w.job(status="COMPLETED")
    w.job(file_name="last.csv", status="FAILED")
    w.breakers.save(BreakerRecord(channel="sftp", partner="acme", state=BreakerState.OPEN, failures=5,
                                  opened_at=datetime.now(UTC), last_error="refused"))
    code, body = w.json("GET", "/partners")
    assert code == 200 and [p["id"] for p in body["items"]] == ["acme", "globex"]
    code, acme = w.json("GET", "/partners/acme")
    assert acme["channels"][0]["breaker"]["state"] == "OPEN" and acme["channels"][0]["next_due"]
    assert acme["jobs_24h"] == {"COMPLETED": 1, "FAILED": 1} and acme["last_file"]["file_name"] == "last.csv"
    assert w.json("GET", "/partners/nobody")[0] == 404
    code, body = w.json("POST", "/partners/acme/breakers/sftp/reset")
    assert code == 200 and body["state"] == "CLOSED" and w.breakers.get("sftp", "acme").failures == 0
    assert w.json("POST", "/partners/globex/breakers/sftp/reset")[0] == 404
    code, body = w.json("POST", "/partners/acme/poll")
    assert (code, body["channel"]) == (202, "sftp")
    assert w.queues.peek("poll-requests")[0]["partner"] == "acme"
    assert w.json("POST", "/partners/globex/poll")[0] == 409
    assert w.json("POST", "/partners/acme/poll", {"channel": "ftp"})[1]["parameter"] == "channel"


def _entry(job_id: str, state: LedgerState, key: str = "k1") -> LedgerEntry:
    now = datetime.now(UTC)
    return LedgerEntry(partner="acme", key=key, channel="sftp", path="/in/a.csv", size=3, mtime=1, state=state,
                       owner="x", claimed_at=now, job_id=job_id, transfer_id="tr", container="inbound",
                       blob_path="acme/a.csv", attempts=5, error="gave up")


def test_ledger_list_and_reset_records_who(w: ApiWorld) -> None:
    job_id = w.job(status="FAILED")
    w.ledger.create(_entry(job_id, LedgerState.FAILED))
    w.ledger.create(_entry(job_id, LedgerState.DONE, key="k2"))
    code, body = w.json("GET", "/partners/acme/ledger", {"state": "FAILED"})
    assert [e["key"] for e in body["items"]] == ["k1"]
    assert w.json("GET", "/partners/acme/ledger", {"state": "NOPE"})[1]["parameter"] == "state"
    code, body = w.json("POST", "/partners/acme/ledger/k1/reset")
    assert code == 200 and body["attempts"] == 0
    note = w.jobs.events(job_id)[-1]
    assert note.data["action"] == "ledger.reset" and note.data["by"] == "function-key"
    assert w.json("POST", "/partners/acme/ledger/k2/reset")[0] == 409
    assert w.json("POST", "/partners/acme/ledger/k9/reset")[0] == 404


def test_partner_keys_upload_only_for_their_partner(w: ApiWorld) -> None:
    key_a, _ = create_key(w.services, "acme", created_by="test")
    key_b, row_b = create_key(w.services, "acme", created_by="test")
    with pytest.raises(Exception, match="2 active keys"):
        create_key(w.services, "acme", created_by="test")
    stored = w.keys.list("acme")
    assert all(key_a.split("_", 2)[2] not in repr(k) for k in stored)  # only the salted hash is stored
    hdr = {"X-Wharf-Partner-Key": key_a}
    r = w.call("POST", "/partners/acme/uploads", {"name": "../in voice.csv"}, body=b"a,b\n", headers=hdr, key=False)
    assert r.status == 201, r.read()
    assert json.loads(r.read())["blob_path"] == "drop/acme/in voice.csv"
    assert b"".join(w.blobs.open_read("drop", "acme/in voice.csv")) == b"a,b\n"
    again = w.call("POST", "/partners/acme/uploads", {"name": "in voice.csv"}, body=b"x", headers=hdr, key=False)
    assert again.status == 409
    assert w.call("POST", "/partners/globex/uploads", {"name": "a.csv"}, body=b"x", headers=hdr,
                  key=False).status == 401
    assert w.call("GET", "/jobs", headers=hdr, key=False).status == 401  # a partner key reads nothing
    revoke_key(w.services, "acme", row_b.key_id)
    assert w.call("POST", "/partners/acme/uploads", {"name": "b.csv"}, body=b"x",
                  headers={"X-Wharf-Partner-Key": key_b}, key=False).status == 401
    create_key(w.services, "acme", created_by="test")  # one revoked: room for a new one


def test_upload_size_limit_is_a_clear_413(w: ApiWorld) -> None:
    small = ApiWorld(WHARF_UPLOAD_MAX_BYTES=10)
    r = small.call("POST", "/partners/acme/uploads", {"name": "big.csv"}, body=b"x" * 11)
    assert r.status == 413 and "WHARF_UPLOAD_MAX_BYTES" in json.loads(r.read())["detail"]
    r = small.call("POST", "/partners/acme/uploads", {"name": "big.csv"}, body=b"x",
                   headers={"Content-Length": "999999"})
    assert r.status == 413
    assert not small.blobs.exists("drop", "acme/big.csv")
    assert small.call("POST", "/partners/acme/uploads", body=b"x").status == 400  # no name


def _pieces(count: int, size: int, seen: list[int]) -> Iterator[bytes]:
    """`count` pieces as a streaming host hands them over; `seen` counts those taken."""
    for i in range(count):
        seen.append(i)
        yield bytes([65 + i % 26]) * size


def test_a_streamed_upload_is_stored_whole_without_joining_the_body(w: ApiWorld) -> None:
    taken: list[int] = []
    r = w.call("POST", "/partners/acme/uploads", {"name": "big.csv"}, stream=_pieces(40, 256 * 1024, taken))
    assert r.status == 201, r.read()
    expected = b"".join(bytes([65 + i % 26]) * (256 * 1024) for i in range(40))
    doc = json.loads(r.read())
    assert doc["bytes"] == len(expected) and doc["sha256"] == hashlib.sha256(expected).hexdigest()
    assert b"".join(w.blobs.open_read("drop", "acme/big.csv")) == expected
    assert len(taken) == 40


def test_a_streamed_upload_over_the_limit_stops_there_with_413_and_stores_nothing(w: ApiWorld) -> None:
    small = ApiWorld(WHARF_UPLOAD_MAX_BYTES=1024 * 1024)
    taken: list[int] = []
    r = small.call("POST", "/partners/acme/uploads", {"name": "big.csv"}, stream=_pieces(1000, 64 * 1024, taken))
    assert r.status == 413 and "WHARF_UPLOAD_MAX_BYTES" in json.loads(r.read())["detail"]
    assert len(taken) == 17  # 16 pieces fill the limit: the 17th is over it, and nothing after it is read
    assert not small.blobs.exists("drop", "acme/big.csv")
    empty = small.call("POST", "/partners/acme/uploads", {"name": "e.csv"}, stream=iter([b"", b""]))
    assert empty.status == 400 and not small.blobs.exists("drop", "acme/e.csv")


def test_a_streamed_body_a_route_reads_whole_is_read_up_to_a_limit(w: ApiWorld) -> None:
    dev = ApiWorld(WHARF_CONSOLE_DEV_SIGNIN=True)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    ok = dev.call("POST", "/console/signin", stream=iter([b"name=ada&", b"role=operator"]), headers=form, key=False)
    assert ok.status == 303 and "wharf_dev" in ok.headers["Set-Cookie"]  # a streamed small body is read whole
    taken: list[int] = []
    r = dev.call("POST", "/console/signin", stream=_pieces(100, 64 * 1024, taken), headers=form, key=False)
    assert r.status == 413, r.read()
    assert len(taken) == 17  # read up to the limit (1 MiB) and one piece over, not the whole body


def test_streamed_downloads_are_not_capped_but_joined_ones_are(w: ApiWorld) -> None:
    capped = ApiWorld(WHARF_DOWNLOAD_MAX_BYTES=1024)
    job_id = capped.job(status="COMPLETED")
    capped.blobs.upload_stream("inbound", "acme/a.csv", iter([b"z" * 5000]))
    capped.jobs.append(job_id, "file.landed", {"blob_path": "inbound/acme/a.csv", "bytes": 5000})
    assert capped.call("GET", f"/jobs/{job_id}/content", {"which": "raw"}).status == 413
    r = capped.call("GET", f"/jobs/{job_id}/content", {"which": "raw"}, stream=iter([]))
    assert r.status == 200 and not isinstance(r.body, bytes)  # an iterable: the host sends it as read
    assert r.read() == b"z" * 5000


def test_the_job_detail_shows_each_transfer_with_the_domain_fields_but_the_job_id(w: ApiWorld) -> None:
    job_id = w.job(status="RUNNING")
    w.jobs.add_transfer(FileTransfer(job_id=job_id, transfer_id="tr-1", file_name="a.csv", source="sftp://h/out/a.csv",
                                     destination="inbound/acme/a.csv", status="LANDED", bytes=3, sha256="ab",
                                     transfer_date=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)))
    code, body = w.json("GET", f"/jobs/{job_id}")
    assert code == 200
    assert body["transfers"] == [{"transfer_id": "tr-1", "file_name": "a.csv", "source": "sftp://h/out/a.csv",
                                  "destination": "inbound/acme/a.csv", "status": "LANDED",
                                  "transfer_date": "2025-03-04T05:06:07Z", "bytes": 3, "sha256": "ab"}]


def test_deliveries_filter_on_every_delivery_state(w: ApiWorld) -> None:
    """The query's states are the domain's: an email delivery's BOUNCED (or DELIVERED, DELAYED) too."""
    job_id = w.job(status="COMPLETED")
    for index, state in enumerate(DeliveryState):
        w.deliveries.create(Delivery(job_id=job_id, index=index, partner="acme", kind="email", target="ops",
                                     route="r", state=state))
    for state in DeliveryState:
        code, body = w.json("GET", "/deliveries", {"state": state.value})
        assert (code, [d["state"] for d in body["items"]]) == (200, [state.value])
    assert w.json("GET", "/deliveries", {"state": "NOPE"})[1]["parameter"] == "state"
def _poll(w: ApiWorld, run: object, *, failures: tuple[type[BaseException], ...] = ()) -> object:
    from shared.services.polls import PollOptions, guarded_poll

    return guarded_poll(w.services, w.services.catalog.get("acme"), channel="sftp", opts=PollOptions(),
                        requested_by="timer", progress=None, attrs={}, run=run,  # type: ignore[arg-type]
                        poll_failures=failures)


def test_last_poll_is_recorded_by_each_poll_and_shown(w: ApiWorld) -> None:
    """Regression: last_poll was always null. Each poll (the guarded run every channel shares) records its
    outcome, time and files; the partners list shows it per channel, the detail the latest one."""
    assert w.json("GET", "/partners/acme")[1]["last_poll"] is None
    assert w.json("GET", "/partners")[1]["items"][0]["channels"][0]["last_poll"] is None

    def landing(tally: object) -> None:
        tally.summary.listed = 3  # type: ignore[attr-defined]
        tally.landed("/in/a.csv", 10, "job-a", "inbound/acme/a.csv")  # type: ignore[attr-defined]
        tally.landed("/in/b.csv", 20, "job-b", "inbound/acme/b.csv")  # type: ignore[attr-defined]
        tally.skipped("/in/c.csv", 5, "already_ingested")  # type: ignore[attr-defined]

    _poll(w, landing)
    code, acme = w.json("GET", "/partners/acme")
    last = acme["last_poll"]
    assert code == 200 and last["status"] == "ok" and last["channel"] == "sftp"
    assert (last["listed"], last["landed"], last["skipped"], last["failed"]) == (3, 2, 1, 0)
    assert last["files"] == ["/in/a.csv", "/in/b.csv"] and last["requested_by"] == "timer"
    assert last["finished_at"] >= last["started_at"]
    assert w.json("GET", "/partners")[1]["items"][0]["channels"][0]["last_poll"] == last

    class Down(Exception):
        pass

    def failing(tally: object) -> None:
        raise Down("connection refused by 127.0.0.1:2222")

    _poll(w, failing, failures=(Down,))
    last = w.json("GET", "/partners/acme")[1]["last_poll"]
    assert last["status"] == "failed" and "connection refused" in last["error"] and last["files"] == []
