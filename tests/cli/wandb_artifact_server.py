"""A W&B server on loopback that holds one model artifact, for the real ``wandb`` library's artifact
API: it answers the GraphQL queries ``wandb.Api().artifact(...).download()`` makes (credentials,
the artifact by name, its manifest, its files' URLs) and serves the manifest and the file.

    python tests/cli/wandb_artifact_server.py ENTITY/PROJECT/COLLECTION FILE   # prints its port, then serves

Version 3 of COLLECTION, alias ``best``, holds FILE as ``model.ckpt``; any other name is not found.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ENTITY, PROJECT, COLLECTION = sys.argv[1].split("/")
FILE = Path(sys.argv[2]).read_bytes()
VERSION = 3
PROJECT_INFO = {"id": "UHJvamVjdDox", "internalId": "1", "name": PROJECT, "entity": {"name": ENTITY}}
COLLECTION_INFO = {"__typename": "ArtifactSequence", "name": COLLECTION, "project": PROJECT_INFO}
ARTIFACT = {
    "__typename": "Artifact",
    "id": "QXJ0aWZhY3Q6MQ==",
    "artifactSequence": COLLECTION_INFO,
    "versionIndex": VERSION,
    "artifactType": {"name": "model"},
    "description": None,
    "metadata": "{}",
    "ttlDurationSeconds": -1,
    "ttlIsInherited": True,
    "tags": [],
    "historyStep": None,
    "state": "COMMITTED",
    "size": len(FILE),
    "digest": hashlib.md5(FILE).hexdigest(),
    "commitHash": "0",
    "fileCount": 1,
    "createdAt": "2026-12-04T00:00:00",
    "updatedAt": None,
}
MANIFEST = {
    "version": 1,
    "storagePolicy": "wandb-storage-policy-v1",
    "storagePolicyConfig": {"storageLayout": "V2"},
    "contents": {"model.ckpt": {"digest": base64.b64encode(hashlib.md5(FILE).digest()).decode(), "size": len(FILE)}},
}
VIEWER = {"id": "VXNlcjox", "entity": ENTITY, "username": ENTITY, "email": "", "flags": "{}", "teams": {"edges": []}}


def answer(query: str, variables: dict, base: str) -> dict:
    """The ``data`` of the GraphQL answer to the named query."""
    name = (re.search(r"(?:query|mutation)\s+(\w+)", query) or [None, ""])[1]
    if name in ("Viewer", "GetDefaultEntity"):
        return {"viewer": VIEWER}
    if name == "ServerFeaturesQuery":
        return {"serverInfo": {"features": []}}
    if name == "ArtifactMembershipByName":
        known = variables["name"] in (f"{COLLECTION}:best", f"{COLLECTION}:v{VERSION}")
        membership = {
            "__typename": "ArtifactCollectionMembership",
            "id": "TTox",
            "versionIndex": VERSION,
            "createdAt": "2026-12-04T00:00:00",
            "aliases": [{"__typename": "ArtifactAlias", "id": "QTox", "alias": "best"}],
            "artifactCollection": COLLECTION_INFO,
            "artifact": ARTIFACT,
        }
        return {"project": {"artifactCollectionMembership": membership if known else None}}
    if name == "FetchArtifactManifest":
        return {"artifact": {"currentManifest": {"file": {"directUrl": f"{base}/manifest.json"}}}}
    if name == "GetArtifactMembershipFileUrls":
        page = {"__typename": "PageInfo", "endCursor": None, "hasNextPage": False}
        node = {"__typename": "File", "name": "model.ckpt", "directUrl": f"{base}/files/model.ckpt"}
        files = {"pageInfo": page, "edges": [{"node": node}]}
        return {
            "project": {
                "artifactCollection": {"__typename": "ArtifactSequence", "artifactMembership": {"files": files}}
            }
        }
    return {}


class Handler(BaseHTTPRequestHandler):
    def send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.send(json.dumps(MANIFEST).encode() if self.path.endswith("manifest.json") else FILE)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        data = {}
        if self.path.startswith("/graphql"):
            request = json.loads(body)
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            data = answer(request.get("query") or "", request.get("variables") or {}, base)
        self.send(json.dumps({"data": data}).encode())

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
