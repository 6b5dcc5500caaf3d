"""`wharf jobs list` against Azurite: newest first, a page at a time, through the JobsByTime index (#14)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from azure.data.tables import TableClient

from shared.bootstrap import Services
from shared.cli import jobs as cli_jobs
from shared.cli import main
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.resources import JOBS_BY_TIME_TABLE

pytestmark = pytest.mark.azurite


def _job(services: Services, partner: str, name: str, *, failed: bool = False) -> str:
    job_id = new_job_id()
    services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD", "source": "test",
                                                     "file_name": name})
    if failed:
        services.jobs.append(job_id, EventType.FAILED, {"reason": "bad row", "step": "validate"})
    return job_id


@pytest.fixture
def world(services: Services, monkeypatch: pytest.MonkeyPatch) -> tuple[Services, list[tuple[str, str, Any]]]:
    """The CLI on this test's tables; every table read recorded, a table listing refused."""
    monkeypatch.setattr(cli_jobs, "services", lambda: services)
    reads: list[tuple[str, str, Any]] = []
    query = TableClient.query_entities

    def recorded(self: TableClient, query_filter: str, **kwargs: Any) -> Any:
        reads.append((self.table_name, query_filter, kwargs.get("results_per_page")))
        return query(self, query_filter, **kwargs)

    def refused(self: TableClient, **_: Any) -> Any:
        raise AssertionError(f"`wharf jobs list` listed the whole {self.table_name} table")

    monkeypatch.setattr(TableClient, "query_entities", recorded)
    monkeypatch.setattr(TableClient, "list_entities", refused)
    return services, reads


def _list(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    assert main(["jobs", "list", *args]) == 0
    out = capsys.readouterr()
    return out.out, out.err


def _next(err: str) -> str:
    (line,) = [ln for ln in err.splitlines() if "--next" in ln]
    return line.split("--next ", 1)[1].split("`", 1)[0]


def test_jobs_list_pages_newest_first_through_the_index(world: tuple[Services, list[tuple[str, str, Any]]],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    services, reads = world
    partner, other = f"jl{uuid.uuid4().hex[:10]}", f"jo{uuid.uuid4().hex[:10]}"
    ids = [_job(services, partner, f"f{i}.csv", failed=i == 1) for i in range(5)]
    _job(services, other, "other.csv")
    newest = ids[::-1]

    out, err = _list(capsys, "--partner", partner, "--limit", "2")
    lines = out.splitlines()
    assert lines[0].split() == ["JOB", "PARTNER", "STATUS", "TYPE", "CREATED", "FILE"]  # the format as before
    assert [ln.split()[0] for ln in lines[1:]] == newest[:2]
    assert lines[1].split()[1:4] == [partner, "PENDING", "UPLOAD"] and lines[1].split()[-1] == "f4.csv"
    assert f"`wharf jobs list --partner {partner} --limit 2 --next " in err  # the same list, its next page
    cursor = _next(err)
    out, err = _list(capsys, "--partner", partner, "--limit", "2", "--next", cursor)
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == newest[2:4]
    out, err = _list(capsys, "--partner", partner, "--limit", "2", "--next", _next(err))
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == newest[4:] and "--next" not in err  # the last page

    out, err = _list(capsys, "--partner", partner, "--limit", "2", "--all")
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == newest and err == ""
    out, _ = _list(capsys, "--partner", partner, "--limit", "2", "--all", "--json")
    assert [r["job_id"] for r in json.loads(out)] == newest
    out, _ = _list(capsys, "--partner", partner, "--status", "FAILED", "--json")
    assert [(r["job_id"], r["status"]) for r in json.loads(out)] == [(ids[1], "FAILED")]
    since = services.jobs.get_job(ids[3]).created_at.isoformat()
    out, _ = _list(capsys, "--partner", partner, "--since", since, "--json")
    assert [r["job_id"] for r in json.loads(out)] == newest[:2]

    # Bounded: only JobsByTime, one month partition and its time range per query, pages no larger than asked.
    assert reads and {name for name, _, _ in reads} == {services.jobs.table_name(JOBS_BY_TIME_TABLE)}  # type: ignore[attr-defined]
    for _, flt, per_page in reads:
        assert "PartitionKey eq '" in flt and "RowKey ge '" in flt and "RowKey lt '" in flt, flt
        assert per_page is not None and per_page <= 50
    assert all(f"Partner eq '{partner}'" in flt for _, flt, _ in reads)


def test_jobs_list_refuses_a_bad_cursor_limit_or_time(world: tuple[Services, list[tuple[str, str, Any]]],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for args, what in ((["--next", "garbage"], "not a `wharf jobs list` cursor"),
                       (["--limit", "0"], "a page holds 1 to 1000 jobs"),
                       (["--limit", "5000"], "a page holds 1 to 1000 jobs"),
                       (["--since", "yesterday"], "not an ISO 8601 date or time")):
        with pytest.raises(SystemExit) as exit_:
            main(["jobs", "list", *args])
        assert exit_.value.code == 2 and what in capsys.readouterr().err
    assert world[1] == []  # nothing read
