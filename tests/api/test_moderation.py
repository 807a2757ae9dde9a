"""The content policy at submission: a prompt that the namespace's diffleet-policy
ConfigMap denies is refused (422, field `prompt`, rule `diffleet-policy`, the rule named)
and no job is created; the negative prompt is not checked."""

import json

from tests.api.support import Api, ApiTenant
from tests.api.test_jobs import SPEC
from tests.support.stack import Kubectl


def policy(kubectl: Kubectl, namespace: str, deny_list: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "diffleet-policy"},
        "data": {"denyList": deny_list},
    }
    kubectl.apply(json.dumps(body), namespace)


def test_a_denied_prompt_is_refused_naming_the_rule(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    policy(kubectl, tenant.namespace, "# platform rules\nred panda\n")
    with api.client(tenant.member) as http:
        refused = http.post("/v1/jobs", json=SPEC | {"prompt": "A RED  Panda, eating"})
        batch = http.post(
            "/v1/jobs:batch",
            json={"jobs": [SPEC, SPEC | {"prompt": "two red pandas and a red panda"}]},
        )
        allowed = http.post(
            "/v1/jobs", json=SPEC | {"prompt": "pandas", "negativePrompt": "red panda"}
        )
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error == {
        "field": "prompt",
        "rule": "diffleet-policy",
        "message": "the prompt matches the deny rule 'red panda' of ConfigMap"
        f" {tenant.namespace}/diffleet-policy",
    }
    assert batch.status_code == 422, batch.text
    assert [e["field"] for e in batch.json()["errors"]] == ["jobs[1].prompt"]
    assert allowed.status_code == 201, allowed.text
    names = kubectl.run("get", "gj", "-n", tenant.namespace, "-o", "name").stdout.split()
    assert names == [f"generationjob.diffleet.io/{allowed.json()['id']}"]
