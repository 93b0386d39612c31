"""A validating admission webhook for ApprovalTask responses, of the shape of
manual-approval-gate's (MAG's): an HTTPS server the apiserver calls on every update,
which decodes the AdmissionReview and allows a response only from an approver (a listed
user or a member of a listed ``group:``), only to their own entry, only while pending.
The same rules as ``examples/approval/config/admission/responses.yaml`` enforces in CEL
(the requester and group-stamping rules left out), so that ``bench/approval.py`` can
measure what a webhook hop adds to a decision against the ValidatingAdmissionPolicy.

    python bench/webhook_standin.py PORT CERT KEY

Listens on 127.0.0.1 only. A stand-in, not MAG's code: MAG's Go module could not be
fetched here (see bench/README.md).
"""

from __future__ import annotations

import ssl
import sys
from typing import Any

from aiohttp import web


def verdict(request: dict[str, Any]) -> tuple[bool, str]:
    """Whether ``request`` (an AdmissionReview's request) may change the gate, and why not."""
    if request.get("operation") != "UPDATE":
        return True, ""
    user = request["userInfo"]["username"]
    groups = set(request["userInfo"].get("groups") or ())
    old, new = request.get("oldObject") or {}, request["object"]
    if (old.get("status") or {}).get("state", "pending") != "pending":
        return False, "the gate is decided: no more responses"
    approvers = old["spec"].get("approvers") or []
    listed = user in approvers or any(
        a.startswith("group:") and a[len("group:") :] in groups for a in approvers
    )
    before = dict(old["spec"].get("responses") or {})
    after = dict(new["spec"].get("responses") or {})
    if before == after:
        return True, ""
    if not listed:
        return False, f"{user} is not an approver of this gate"
    before.pop(user, None)
    after.pop(user, None)
    if before != after:
        return False, "one may change only one's own response"
    return True, ""


async def validate(http: web.Request) -> web.Response:
    review = await http.json()
    request = review["request"]
    allowed, message = verdict(request)
    response: dict[str, Any] = {"uid": request["uid"], "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 403, "message": message}
    return web.json_response(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
    )


def main(port: int, cert: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/validate", validate)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
