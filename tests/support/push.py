"""Push images from a BlobStore to a registry, in plain ``requests``.

Deliberately independent of ``wfexs_like.registry``: if the client under test
and the helper that sets up its fixtures shared code, a bug there could make
both agree on something wrong. This speaks the distribution push protocol
directly: ``POST .../blobs/uploads/`` then a monolithic ``PUT ?digest=``, then
``PUT .../manifests/<ref>``; for an index, every child manifest first (by
digest), then the index under the tag. Basic auth and Bearer tokens (with
``pull,push`` scope) are handled for the authenticated registries.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

import requests

from wfexs_like.images.blobstore import BlobStore
from wfexs_like.images.manifest import Descriptor, Index, Manifest, parse_manifest_or_index


class PushError(RuntimeError):
    pass


class _Pusher:
    def __init__(self, base: str, repo: str, auth: tuple[str, str] | None, verify: bool | str) -> None:
        self.base = base.rstrip("/")
        self.repo = repo
        self.auth = auth
        self.verify = verify
        self.session = requests.Session()
        self.session.trust_env = False
        self.headers: dict[str, str] = {}

    def request(self, method: str, url: str, **kw) -> requests.Response:
        url = urljoin(self.base + "/", url)
        headers = {**kw.pop("headers", {}), **self.headers}
        resp = self.session.request(method, url, headers=headers, verify=self.verify, timeout=30, **kw)
        if resp.status_code == 401:
            self._authenticate(resp.headers.get("WWW-Authenticate", ""))
            headers.update(self.headers)
            resp = self.session.request(method, url, headers=headers, verify=self.verify, timeout=30, **kw)
        return resp

    def _authenticate(self, challenge: str) -> None:
        if challenge.lower().startswith("basic"):
            if not self.auth:
                raise PushError("registry wants Basic auth; pass auth=(user, password)")
            self.session.auth = self.auth
            return
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        q = {"service": params.get("service", ""), "scope": f"repository:{self.repo}:pull,push"}
        r = self.session.get(params["realm"], params=q, auth=self.auth, verify=self.verify, timeout=30)
        r.raise_for_status()
        body = r.json()
        self.headers["Authorization"] = "Bearer " + (body.get("token") or body["access_token"])

    def push_blob(self, store: BlobStore, desc: Descriptor) -> None:
        if desc.urls:
            return  # foreign layer: lives at its URLs, registries are not meant to have it
        r = self.request("HEAD", f"/v2/{self.repo}/blobs/{desc.digest}")
        if r.status_code == 200:
            return
        r = self.request("POST", f"/v2/{self.repo}/blobs/uploads/")
        if r.status_code != 202:
            raise PushError(f"starting upload of {desc.digest}: HTTP {r.status_code} {r.text[:300]}")
        loc = urljoin(r.url, r.headers["Location"])
        sep = "&" if "?" in loc else "?"
        data = store.path(desc.digest).read_bytes()
        r = self.request(
            "PUT",
            f"{loc}{sep}digest={desc.digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if r.status_code != 201:
            raise PushError(f"uploading {desc.digest}: HTTP {r.status_code} {r.text[:300]}")

    def put_manifest(self, ref: str, raw: bytes, media_type: str) -> str:
        r = self.request(
            "PUT", f"/v2/{self.repo}/manifests/{ref}", data=raw, headers={"Content-Type": media_type}
        )
        if r.status_code != 201:
            raise PushError(f"putting manifest {ref}: HTTP {r.status_code} {r.text[:500]}")
        return r.headers["Docker-Content-Digest"]

    def push_manifest(self, store: BlobStore, m: Manifest, ref: str) -> str:
        for desc in (m.config, *m.layers):
            self.push_blob(store, desc)
        return self.put_manifest(ref, m.raw, m.media_type)


def push_image(
    registry_url: str,
    repo: str,
    tag: str,
    store: BlobStore,
    manifest_or_index: Manifest | Index,
    *,
    auth: tuple[str, str] | None = None,
    verify: bool | str = True,
) -> str:
    """Push ``manifest_or_index`` (and everything it references, read from ``store``) as ``repo:tag``.

    Returns the digest the registry reports for the tag (``Docker-Content-Digest``).
    """
    p = _Pusher(registry_url, repo, auth, verify)
    try:
        if isinstance(manifest_or_index, Manifest):
            return p.push_manifest(store, manifest_or_index, tag)
        for child in manifest_or_index.manifests:
            doc = parse_manifest_or_index(store.path(child.digest).read_bytes())
            if not isinstance(doc, Manifest):
                raise PushError(f"nested indexes are not supported by this helper ({child.digest})")
            p.push_manifest(store, doc, child.digest)
        return p.put_manifest(tag, manifest_or_index.raw, manifest_or_index.media_type)
    finally:
        p.session.close()
