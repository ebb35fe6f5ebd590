"""W&B servers on loopback for the real ``wandb`` library, of two kinds:

    python tests/cli/wandb_server.py outage
    python tests/cli/wandb_server.py artifact ENTITY/PROJECT/COLLECTION FILE

Each prints the port it listens on, then serves. ``outage`` answers the start-up calls W&B makes
and, from the first metrics upload on, accepts requests and never answers (the worst kind of
outage: no error to react to, only silence). ``artifact`` holds one model artifact: it answers the
GraphQL queries ``wandb.Api().artifact(...).download()`` makes (credentials, the artifact by name,
its manifest, its files' URLs) and serves the manifest and the file. Version 3 of COLLECTION, alias
``best``, holds FILE as ``model.ckpt``; any other name is not found.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OUTAGE = threading.Event()
VERSION = 3


class Held:
    """The one artifact an ``artifact`` server holds, and its answers to W&B's queries."""

    def __init__(self, name: str, file: Path) -> None:
        self.entity, self.project, self.collection = name.split("/")
        self.file = file.read_bytes()
        md5 = hashlib.md5(self.file)
        self.manifest = {
            "version": 1,
            "storagePolicy": "wandb-storage-policy-v1",
            "storagePolicyConfig": {"storageLayout": "V2"},
            "contents": {"model.ckpt": {"digest": base64.b64encode(md5.digest()).decode(), "size": len(self.file)}},
        }
        project = {"id": "UHJvamVjdDox", "internalId": "1", "name": self.project, "entity": {"name": self.entity}}
        self.collection_info = {"__typename": "ArtifactSequence", "name": self.collection, "project": project}
        self.artifact = {
            "__typename": "Artifact",
            "id": "QXJ0aWZhY3Q6MQ==",
            "artifactSequence": self.collection_info,
            "versionIndex": VERSION,
            "artifactType": {"name": "model"},
            "description": None,
            "metadata": "{}",
            "ttlDurationSeconds": -1,
            "ttlIsInherited": True,
            "tags": [],
            "historyStep": None,
            "state": "COMMITTED",
            "size": len(self.file),
            "digest": md5.hexdigest(),
            "commitHash": "0",
            "fileCount": 1,
            "createdAt": "2026-12-04T00:00:00",
            "updatedAt": None,
        }

    def answer(self, query: str, variables: dict, base: str) -> dict:
        """The ``data`` of the GraphQL answer to the named query."""
        name = (re.search(r"(?:query|mutation)\s+(\w+)", query) or [None, ""])[1]
        if name in ("Viewer", "GetDefaultEntity"):
            viewer = {"id": "VXNlcjox", "entity": self.entity, "username": self.entity, "email": "", "flags": "{}"}
            return {"viewer": {**viewer, "teams": {"edges": []}}}
        if name == "ServerFeaturesQuery":
            return {"serverInfo": {"features": []}}
        if name == "ArtifactMembershipByName":
            known = variables["name"] in (f"{self.collection}:best", f"{self.collection}:v{VERSION}")
            membership = {
                "__typename": "ArtifactCollectionMembership",
                "id": "TTox",
                "versionIndex": VERSION,
                "createdAt": "2026-12-04T00:00:00",
                "aliases": [{"__typename": "ArtifactAlias", "id": "QTox", "alias": "best"}],
                "artifactCollection": self.collection_info,
                "artifact": self.artifact,
            }
            return {"project": {"artifactCollectionMembership": membership if known else None}}
        if name == "FetchArtifactManifest":
            return {"artifact": {"currentManifest": {"file": {"directUrl": f"{base}/manifest.json"}}}}
        if name == "GetArtifactMembershipFileUrls":
            page = {"__typename": "PageInfo", "endCursor": None, "hasNextPage": False}
            node = {"__typename": "File", "name": "model.ckpt", "directUrl": f"{base}/files/model.ckpt"}
            membership = {"files": {"pageInfo": page, "edges": [{"node": node}]}}
            return {
                "project": {"artifactCollection": {"__typename": "ArtifactSequence", "artifactMembership": membership}}
            }
        return {}


class Handler(BaseHTTPRequestHandler):
    held: Held | None = None  # None: an outage server

    def send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.held is None:
            if "file_stream" in self.path:
                OUTAGE.set()
            if OUTAGE.is_set():
                threading.Event().wait()  # hang this connection for good
            self.send(json.dumps({"data": {}}).encode())
        elif self.command == "GET":
            self.send(
                json.dumps(self.held.manifest).encode() if self.path.endswith("manifest.json") else self.held.file
            )
        else:
            data = {}
            if self.path.startswith("/graphql"):
                request = json.loads(body)
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                data = self.held.answer(request.get("query") or "", request.get("variables") or {}, base)
            self.send(json.dumps({"data": data}).encode())

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    if sys.argv[1] == "artifact":
        Handler.held = Held(sys.argv[2], Path(sys.argv[3]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
