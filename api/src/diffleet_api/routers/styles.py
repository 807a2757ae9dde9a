"""Style presets: the tenant's own StylePresets and the platform's, which a job names in
spec.style."""

from fastapi import APIRouter

from diffleet_api.deps import RuntimeDep, Viewer
from diffleet_api.errors import PROBLEM_RESPONSES
from diffleet_api.schemas import StyleList, StylePublic
from diffleet_core.model_rules import lookup_namespaces

router = APIRouter(prefix="/v1/styles", tags=["styles"], responses=PROBLEM_RESPONSES)


@router.get("")
async def list_styles(principal: Viewer, runtime: RuntimeDep) -> StyleList:
    """The tenant's own presets first, then the platform's (`platform: true`): a job's
    spec.style is looked up in that order."""
    system = runtime.platform.system_namespace
    found = [
        StylePublic.from_resource(body, system)
        for namespace in lookup_namespaces(principal.tenant.namespace, system)
        for body in await runtime.kube.list_style_presets(namespace)
    ]
    return StyleList(items=found)
