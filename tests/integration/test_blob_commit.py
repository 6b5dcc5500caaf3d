"""BlobStore uploads: the `before_commit` gate and the one-request path for bodies that fit in one block."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobClient, BlobServiceClient

from shared.adapters.blobs import BlobStoreClient
from shared.ports import BlobStore
from tests.fakes import FakeBlobStore

BLOCK = 64 * 1024


@pytest.fixture(params=["fake", "azurite"])
def store(request: pytest.FixtureRequest) -> Iterator[tuple[BlobStore, str]]:
    container = f"c{uuid.uuid4().hex[:20]}"
    if request.param == "fake":
        fake = FakeBlobStore(containers=[])
        fake.ensure_containers([container])
        yield fake, container
        return
    conn = request.getfixturevalue("azurite")
    real = BlobStoreClient.from_connection_string(conn, block_size=BLOCK)
    real.ensure_containers([container])
    yield real, container
    BlobServiceClient.from_connection_string(conn).delete_container(container)


@pytest.mark.parametrize("size", [0, 10, BLOCK, 3 * BLOCK + 5])
def test_before_commit_runs_once_after_the_last_byte(store: tuple[BlobStore, str], size: int) -> None:
    blobs, container = store
    seen: list[str] = []
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 10_000):
            seen.append("chunk")
            yield data[start:start + 10_000]
        seen.append("end")

    info = blobs.upload_stream(container, "gate/ok.bin", chunks(), before_commit=lambda: seen.append("gate"))
    assert seen[-2:] == ["end", "gate"] and seen.count("gate") == 1
    assert (info.size, info.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert b"".join(blobs.open_read(container, "gate/ok.bin")) == data


@pytest.mark.parametrize("size", [10, 3 * BLOCK + 5])
def test_a_refusing_gate_commits_nothing(store: tuple[BlobStore, str], size: int) -> None:
    blobs, container = store

    def refuse() -> None:
        raise RuntimeError("changed since the first look")

    with pytest.raises(RuntimeError, match="changed since"):
        blobs.upload_stream(container, "gate/no.bin", iter([b"y" * size]), before_commit=refuse)
    assert not blobs.exists(container, "gate/no.bin") and blobs.list_blobs(container, "gate/") == []


def test_one_block_bodies_go_up_in_one_request(azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    container = f"c{uuid.uuid4().hex[:20]}"
    real = BlobStoreClient.from_connection_string(azurite, block_size=BLOCK)
    real.ensure_containers([container])
    calls: dict[str, int] = {"stage_block": 0, "commit_block_list": 0, "upload_blob": 0}
    for name in calls:
        original = getattr(BlobClient, name)

        def counted(self: BlobClient, *args: object, _name: str = name, _orig: object = original,
                    **kwargs: object) -> object:
            calls[_name] += 1
            return _orig(self, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(BlobClient, name, counted)
    real.upload_stream(container, "small", iter([b"a" * 1000, b"b" * (BLOCK - 1000)]))
    assert calls == {"stage_block": 0, "commit_block_list": 0, "upload_blob": 1}
    real.upload_stream(container, "big", iter([b"c" * (2 * BLOCK + 1)]))
    assert calls == {"stage_block": 3, "commit_block_list": 1, "upload_blob": 1}
    assert real.get_info(container, "small").size == BLOCK and real.get_info(container, "big").size == 2 * BLOCK + 1
    BlobServiceClient.from_connection_string(azurite).delete_container(container)
