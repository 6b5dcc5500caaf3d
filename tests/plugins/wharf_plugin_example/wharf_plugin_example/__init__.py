"""Example Wharf plugin: `example-dir` delivers into a local folder, `example_upper` upper-cases the bytes,
`example_no_tabs` refuses files with a tab."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.services.destinations import DestinationKind
from shared.services.transforms import Transform
from shared.services.validators import Validator


class DirectoryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    folder: str


class DirectoryDestination(DestinationKind):
    """Writes the output to `folder/{name}` (through a temporary name, so it appears whole)."""

    Options = DirectoryOptions

    def deliver(self, services: Any, job: Any, ref: Mapping[str, Any], output: Mapping[str, Any],
                dest: Mapping[str, Any]) -> dict[str, Any]:
        options = DirectoryOptions.model_validate({k: v for k, v in dest.items() if k != "kind"})
        target = Path(options.folder) / str(output["name"])
        temp = target.with_name(target.name + ".tmp")
        digest = hashlib.sha256()
        with temp.open("wb") as f:
            for chunk in services.blobs.open_read(output["container"], output["path"]):
                digest.update(chunk)
                f.write(chunk)
        os.replace(temp, target)
        return {"kind": self.name, "target": f"dir:{target}", "sha256": digest.hexdigest(),
                "bytes": target.stat().st_size}


class Upper(Transform):
    def run(self, chunks: Iterable[bytes], options: Mapping[str, Any] | None, rule: Any) -> Iterator[bytes]:
        self.parse_options(options)
        for chunk in chunks:
            yield chunk.upper()


class NoTabs(Validator):
    def check(self, chunks: Iterable[bytes], options: Any, *, file_name: str) -> list[str]:
        return [f"{file_name} contains a tab"] if any(b"\t" in c for c in chunks) else []
