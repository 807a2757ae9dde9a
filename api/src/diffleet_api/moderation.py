"""The content policy at submission (diffleet_core.policy): a prompt that the tenant's
policy denies is refused (422, field `prompt`, rule `diffleet-policy`) before any job is
created. The policy is the ConfigMap diffleet-policy of the tenant's namespace, else the
platform's, each read remembered for POLICY_CACHE_SECONDS (the operator checks jobs
created with kubectl, at admission, alike)."""

from diffleet_api.errors import FieldError
from diffleet_api.runtime import Runtime
from diffleet_core.model_rules import lookup_namespaces
from diffleet_core.policy import POLICY_CONFIGMAP, Policy
from diffleet_core.resources.generation_job import GenerationJobSpec

POLICY_CACHE_SECONDS = 10.0


async def policy_of(runtime: Runtime, namespace: str) -> Policy:
    """The policy that applies to the namespace's jobs (empty when there is none)."""
    for where in lookup_namespaces(namespace, runtime.platform.system_namespace):

        async def read(where: str = where) -> dict[str, str] | None:
            return await runtime.kube.config_map_data(where, POLICY_CONFIGMAP)

        data = await runtime.policies.get(where, POLICY_CONFIGMAP, read)
        if data is not None:
            return Policy.from_configmap(data, f"{where}/{POLICY_CONFIGMAP}")
    return Policy()


def denied_prompts(
    specs: list[GenerationJobSpec], policy: Policy, field_prefix: str
) -> list[FieldError]:
    """An error for each prompt that matches a deny rule of the policy."""
    errors = []
    for index, spec in enumerate(specs):
        rule = policy.denied(spec.prompt)
        if rule is not None:
            where = f"{field_prefix}[{index}]." if field_prefix else ""
            errors.append(
                FieldError(
                    field=f"{where}prompt",
                    rule=POLICY_CONFIGMAP,
                    message=f"the prompt matches the deny rule {rule!r} of ConfigMap"
                    f" {policy.source}",
                )
            )
    return errors
