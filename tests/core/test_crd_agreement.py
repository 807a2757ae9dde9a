"""The CRDs in crds/ and the pydantic models of diffleet_core.resources agree, field by field.

The API server enforces the CRD schemas; the operator, the worker and the REST API use the
models. These tests compare the models' JSON schemas with the CRDs' OpenAPI schemas at
every nesting level (names, types, required fields, bounds, enums, defaults) and check the
CRDs' CEL rules against the models' cross-field rules and the immutability of the spec.
"""

import re
from collections.abc import Collection
from functools import cache
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from diffleet_core.resources import (
    generation_job,
    gpu_pool,
    model_cache,
    style_preset,
    training_job,
)
from diffleet_core.resources.generation_job import (
    ANY_GPU_CLASS,
    GUIDANCE_WINDOW_RULE,
    ControlNetSpec,
    GenerationJobSpec,
    HiresFixSpec,
    IpAdapterSpec,
    LoraRef,
    Mode,
    OutpaintSpec,
    OutputFormat,
    OutputSpec,
    RemoveBackgroundSpec,
    UpscaleSpec,
    VideoSpec,
    spec_rule_violations,
)
from diffleet_core.resources.gpu_pool import GPUPoolSpec, gpu_pool_rule_violations
from diffleet_core.resources.model_cache import (
    ModelCacheSpec,
    ModelFormat,
    ModelType,
    model_cache_rule_violations,
)
from diffleet_core.styles import OVERRIDABLE
from tests.support.stack import ROOT

JsonSchema = dict[str, Any]

VERSION = "v1alpha1"

# Keywords that must be equal in the CRD and in the model. `format: int64` on an integer is
# left out below: every Kubernetes integer is an int64, the CRD only says so for clients.
COMPARED_KEYWORDS = (
    "type",
    "format",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
)

# (CRD plural, part of the resource, its model)
PARTS = [
    ("generationjobs", "spec", generation_job.GenerationJobSpec),
    ("generationjobs", "status", generation_job.GenerationJobStatus),
    ("modelcaches", "spec", model_cache.ModelCacheSpec),
    ("modelcaches", "status", model_cache.ModelCacheStatus),
    ("gpupools", "spec", gpu_pool.GPUPoolSpec),
    ("gpupools", "status", gpu_pool.GPUPoolStatus),
    ("stylepresets", "spec", style_preset.StylePresetSpec),
    ("trainingjobs", "spec", training_job.TrainingJobSpec),
    ("trainingjobs", "status", training_job.TrainingJobStatus),
]
PART_IDS = [f"{plural}.{part}" for plural, part, _ in PARTS]

# GenerationJob fields whose default only the model has: the CRD stores them absent when a
# job leaves them out, so that a style preset fills just those (diffleet_core.styles); the
# operator and the API read the job through the model, which defaults the rest.
MODEL_ONLY_DEFAULTS = [
    field.alias or name
    for name, field in GenerationJobSpec.model_fields.items()
    if name in OVERRIDABLE and field.get_default(call_default_factory=True) is not None
]


@cache
def crd(plural: str) -> JsonSchema:
    """The CustomResourceDefinition crds/PLURAL.diffleet.io.yaml."""
    loaded: JsonSchema = yaml.safe_load((ROOT / "crds" / f"{plural}.diffleet.io.yaml").read_text())
    return loaded


def crd_schema(plural: str) -> JsonSchema:
    """The openAPIV3Schema of the CRD's only version, v1alpha1."""
    versions = crd(plural)["spec"]["versions"]
    assert [version["name"] for version in versions] == [VERSION]
    schema: JsonSchema = versions[0]["schema"]["openAPIV3Schema"]
    return schema


def crd_part(plural: str, part: str) -> JsonSchema:
    """The schema of `spec` or `status` in the CRD."""
    schema: JsonSchema = crd_schema(plural)["properties"][part]
    return schema


class FactoryDefaults(GenerateJsonSchema):
    """Also writes the defaults made by a `default_factory` (e.g. ModelCache `warm`), as
    the wire has them: a model's absent (None) fields left out."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            made = factory()  # type: ignore[call-arg]
            if isinstance(made, BaseModel):
                return made.model_dump(mode="json", by_alias=True, exclude_none=True)
            return made
        return super().get_default_value(schema)


def model_schema(model: type[BaseModel]) -> JsonSchema:
    """The model's JSON schema by alias, with $ref inlined and `anyOf [X, null]` read as X.

    A default of None means "absent" on the wire, so it is dropped: the CRD has no default
    for such a field.
    """
    raw = model.model_json_schema(by_alias=True, schema_generator=FactoryDefaults)
    return resolve(raw, raw.get("$defs", {}))


def resolve(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    """`node` with references inlined and optional types unwrapped, recursively. A union
    of string enums (JobOutput's image or video format) is one enum of all their values,
    as the CRD says it; JSON Schema's numeric `exclusiveMinimum` is OpenAPI's boolean one
    with the bound in `minimum`."""
    node = dict(node)
    while "$ref" in node or "anyOf" in node:
        if "$ref" in node:
            # A definition's docstring describes its type, not the field that uses it.
            target = dict(defs[node.pop("$ref").rsplit("/", 1)[-1]])
            target.pop("description", None)
            node = {**target, **node}
        else:
            members = [member for member in node.pop("anyOf") if member != {"type": "null"}]
            if len(members) > 1:
                members = [enum_union([resolve(member, defs) for member in members])]
            node = {**members[0], **node}
    for keyword in ("$defs", "title"):
        node.pop(keyword, None)
    if "default" in node and node["default"] is None:
        del node["default"]
    if not isinstance(node.get("exclusiveMinimum", True), bool):
        node["minimum"], node["exclusiveMinimum"] = node.pop("exclusiveMinimum"), True
    if "properties" in node:
        node["properties"] = {
            name: resolve(child, defs) for name, child in node["properties"].items()
        }
    for keyword in ("items", "additionalProperties"):
        if isinstance(node.get(keyword), dict):
            node[keyword] = resolve(node[keyword], defs)
    return node


def enum_union(members: list[JsonSchema]) -> JsonSchema:
    """One string enum of the values of `members`, each once, in their order."""
    assert all(member.get("type") == "string" and "enum" in member for member in members), (
        f"only `X | None` unions and unions of string enums are expected: {members}"
    )
    values = [value for member in members for value in member["enum"]]
    return {"type": "string", "enum": list(dict.fromkeys(values))}


def with_defaults(value: Any, schema: JsonSchema) -> Any:
    """`value` as the API server stores it: with the defaults of nested fields filled in."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        filled = {
            name: with_defaults(item, properties.get(name, {})) for name, item in value.items()
        }
        for name, child in properties.items():
            if name not in filled and "default" in child:
                filled[name] = with_defaults(child["default"], child)
        return filled
    if isinstance(value, list):
        return [with_defaults(item, schema.get("items", {})) for item in value]
    return value


def same_value(left: Any, right: Any) -> bool:
    """JSON equality: 7 equals 7.0, but false is not 0."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_value(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_value, left, right))
    return bool(left == right)


def keyword_value(schema: JsonSchema, keyword: str) -> Any:
    """The value of a compared keyword, None when absent."""
    value = schema.get(keyword)
    if keyword == "format" and schema.get("type") == "integer" and value == "int64":
        return None
    return value


def differences(
    crd_node: JsonSchema,
    model_node: JsonSchema,
    path: str,
    model_only_defaults: Collection[str] = (),
) -> list[str]:
    """Every way the CRD schema at `path` differs from the model's, one line each; the
    fields `model_only_defaults` of the spec have a default in the model alone."""
    found = []
    for keyword in COMPARED_KEYWORDS:
        in_crd, in_model = keyword_value(crd_node, keyword), keyword_value(model_node, keyword)
        if not same_value(in_crd, in_model):
            found.append(f"{path}: {keyword} is {in_crd!r} in the CRD, {in_model!r} in the model")

    crd_default = with_defaults(crd_node.get("default"), crd_node)
    if path in {f"spec.{name}" for name in model_only_defaults}:
        if crd_default is not None or model_node.get("default") is None:
            found.append(f"{path}: the default is the model's alone, not the CRD's")
    elif not same_value(crd_default, model_node.get("default")):
        found.append(
            f"{path}: default is {crd_default!r} in the CRD (nested defaults applied), "
            f"{model_node.get('default')!r} in the model"
        )

    crd_required, model_required = crd_node.get("required", []), model_node.get("required", [])
    if sorted(crd_required) != sorted(model_required):
        found.append(
            f"{path}: required is {crd_required} in the CRD, {model_required} in the model"
        )

    crd_properties = crd_node.get("properties", {})
    model_properties = model_node.get("properties", {})
    for name in sorted(crd_properties.keys() - model_properties.keys()):
        found.append(f"{path}.{name}: in the CRD, not in the model")
    for name in sorted(model_properties.keys() - crd_properties.keys()):
        found.append(f"{path}.{name}: in the model, not in the CRD")
    for name in sorted(crd_properties.keys() & model_properties.keys()):
        found += differences(
            crd_properties[name], model_properties[name], f"{path}.{name}", model_only_defaults
        )

    if "items" in crd_node or "items" in model_node:
        found += differences(crd_node.get("items", {}), model_node.get("items", {}), f"{path}[]")

    # A dict-valued field (a map) has a schema for its values. A boolean additionalProperties
    # is the model's policy for unknown fields, which the API server's pruning replaces.
    crd_values = crd_node.get("additionalProperties")
    model_values = model_node.get("additionalProperties")
    if isinstance(crd_values, dict) or isinstance(model_values, dict):
        if not (isinstance(crd_values, dict) and isinstance(model_values, dict)):
            found.append(f"{path}: a map in only one of the CRD and the model")
        else:
            found += differences(crd_values, model_values, f"{path}{{}}")
    return found


def crd_fields(node: JsonSchema, path: str) -> list[tuple[str, JsonSchema]]:
    """Every field below `node` (properties, list items and map values) with its path."""
    fields = []
    for name, child in node.get("properties", {}).items():
        fields.append((f"{path}.{name}", child))
        fields += crd_fields(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        fields += crd_fields(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        fields += crd_fields(node["additionalProperties"], f"{path}{{}}")
    return fields


def rules(schema: JsonSchema) -> list[JsonSchema]:
    """The CEL rules (x-kubernetes-validations) declared on one schema node."""
    found: list[JsonSchema] = schema.get("x-kubernetes-validations", [])
    return found


def is_transition_rule(rule: JsonSchema) -> bool:
    """A rule that compares with the stored object, so runs on updates only."""
    return "oldSelf" in rule["rule"]


@pytest.mark.parametrize(("plural", "part", "model"), PARTS, ids=PART_IDS)
def test_crd_schema_matches_the_model(plural: str, part: str, model: type[BaseModel]) -> None:
    model_only = MODEL_ONLY_DEFAULTS if model is GenerationJobSpec else ()
    found = differences(crd_part(plural, part), model_schema(model), part, model_only)
    assert not found, "the CRD and the model differ:\n" + "\n".join(found)


@pytest.mark.parametrize(("plural", "part", "model"), PARTS, ids=PART_IDS)
def test_every_field_is_described(plural: str, part: str, model: type[BaseModel]) -> None:
    """`kubectl explain` describes every field; a spec field keeps the model's words."""
    model_fields = dict(crd_fields(model_schema(model), part))
    undescribed = []
    for path, field in crd_fields(crd_part(plural, part), part):
        description = field.get("description", "")
        model_description = model_fields.get(path, {}).get("description", "").rstrip(".")
        if not description or model_description.lower() not in description.lower():
            undescribed.append(f"{path}: {description!r} (model: {model_description!r})")
    assert not undescribed, "fields without the model's description:\n" + "\n".join(undescribed)


# A GPUPool's env entries take a pod's valueFrom as it is: the API server checks it when
# the operator creates the pod.
KEEPS_UNKNOWN_FIELDS = {"gpupools": ["gpupools.spec.template.env[].valueFrom"]}


@pytest.mark.parametrize("plural", ["generationjobs", "modelcaches", "gpupools", "stylepresets"])
def test_crd_is_structural_without_unknown_fields(plural: str) -> None:
    keeping = [
        path
        for path, field in crd_fields(crd_schema(plural), plural)
        if "x-kubernetes-preserve-unknown-fields" in field
    ]
    assert keeping == KEEPS_UNKNOWN_FIELDS.get(plural, [])
    assert crd_schema(plural)["required"] == ["spec"]


@pytest.mark.parametrize(
    ("plural", "kind", "scope"),
    [
        (generation_job.PLURAL, generation_job.KIND, "Namespaced"),
        (model_cache.PLURAL, model_cache.KIND, "Namespaced"),
        (gpu_pool.PLURAL, gpu_pool.KIND, "Cluster"),
    ],
)
def test_crd_names_and_status_subresource(plural: str, kind: str, scope: str) -> None:
    definition = crd(plural)
    assert definition["metadata"]["name"] == f"{plural}.diffleet.io"
    assert definition["spec"]["group"] == "diffleet.io"
    assert definition["spec"]["scope"] == scope
    assert definition["spec"]["names"]["kind"] == kind
    assert definition["spec"]["names"]["plural"] == plural
    assert "diffleet" in definition["spec"]["names"]["categories"]
    assert definition["spec"]["versions"][0]["subresources"] == {"status": {}}


@pytest.mark.parametrize(
    ("plural", "columns"),
    [
        (
            "generationjobs",
            [
                ("Phase", ".status.phase"),
                ("Model", ".spec.model"),
                ("Tier", ".status.tier"),
                ("Pool", ".status.pool"),
                ("Step", ".status.progress.step"),
                ("Steps", ".status.progress.totalSteps"),
                ("Age", ".metadata.creationTimestamp"),
            ],
        ),
        (
            "modelcaches",
            [
                ("Phase", ".status.phase"),
                ("Type", ".spec.type"),
                ("Base", ".spec.baseModel"),
                ("Size", ".spec.sizeBytes"),
                ("Hot", ".status.hotReplicas"),
                ("Prewarm", ".spec.warm.replicas"),
                ("Age", ".metadata.creationTimestamp"),
            ],
        ),
        (
            "gpupools",
            [
                ("Type", ".spec.gpuType"),
                ("Desired", ".status.desiredReplicas"),
                ("Ready", ".status.readyReplicas"),
                ("Busy", ".status.busyReplicas"),
                ("Queued", ".status.queuedJobs"),
                ("Min", ".spec.minReplicas"),
                ("Max", ".spec.maxReplicas"),
                ("Age", ".metadata.creationTimestamp"),
            ],
        ),
    ],
)
def test_printer_columns_show_schema_fields(plural: str, columns: list[tuple[str, str]]) -> None:
    printed = crd(plural)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(column["name"], column["jsonPath"]) for column in printed] == columns
    fields = dict(crd_fields(crd_schema(plural), ""))
    for column in printed:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        field = fields.get(column["jsonPath"])
        assert field is not None, f"column {column['name']}: no field {column['jsonPath']}"
        assert column["type"] == field["type"], f"column {column['name']}: type"


# Specs that each break one cross-field rule of the model, and where the CRD's CEL rule of
# the same message points.
VALID_SPEC: dict[str, Any] = {"model": "sd15-base", "prompt": "a lighthouse at dusk"}
IMAGE = "s3://diffleet-uploads/in.png"
OUTPAINT = OutpaintSpec(right=128)
UPSCALE = UpscaleSpec(model="tiny-esrgan-x4")
UPSCALE_ONLY: dict[str, Any] = {
    "mode": Mode.UPSCALE,
    "init_image": IMAGE,
    "upscale": UPSCALE,
    "model": None,
    "prompt": "",
}
CONTROL = ControlNetSpec(model="cn-canny", image=IMAGE)
IP_ADAPTER = IpAdapterSpec(model="tiny-ip-adapter", image=IMAGE)
REMOVE_BACKGROUND = RemoveBackgroundSpec(model="tiny-background")
IMG2VID: dict[str, Any] = {"mode": Mode.IMG2VID, "init_image": IMAGE, "video": VideoSpec()}
TXT2VID: dict[str, Any] = {
    "mode": Mode.TXT2VID,
    "video": VideoSpec(motion_adapter="tiny-motion"),
}
CROSS_FIELD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("img2img-without-initImage", {"mode": Mode.IMG2IMG}, ".initImage"),
    ("inpaint-without-initImage", {"mode": Mode.INPAINT, "mask_image": IMAGE}, ".initImage"),
    ("txt2img-with-initImage", {"init_image": IMAGE}, ".initImage"),
    ("inpaint-without-maskImage", {"mode": Mode.INPAINT, "init_image": IMAGE}, ".maskImage"),
    (
        "img2img-with-maskImage",
        {"mode": Mode.IMG2IMG, "init_image": IMAGE, "mask_image": IMAGE},
        ".maskImage",
    ),
    ("txt2img-with-strength", {"strength": 0.5}, ".strength"),
    ("upscale-with-strength", {**UPSCALE_ONLY, "strength": 0.5}, ".strength"),
    ("txt2img-without-model", {"model": None}, ".model"),
    ("txt2img-with-empty-prompt", {"prompt": ""}, ".prompt"),
    ("outpaint-without-outpaint", {"mode": Mode.OUTPAINT, "init_image": IMAGE}, ".outpaint"),
    (
        "img2img-with-outpaint",
        {"mode": Mode.IMG2IMG, "init_image": IMAGE, "outpaint": OUTPAINT},
        ".outpaint",
    ),
    (
        "outpaint-adding-nothing",
        {"mode": Mode.OUTPAINT, "init_image": IMAGE, "outpaint": OutpaintSpec()},
        ".outpaint",
    ),
    (
        "outpaint-canvas-too-wide",
        {
            "mode": Mode.OUTPAINT,
            "init_image": IMAGE,
            "width": 1536,
            "outpaint": OutpaintSpec(left=512, right=8),
        },
        ".outpaint",
    ),
    (
        "img2img-with-hiresFix",
        {"mode": Mode.IMG2IMG, "init_image": IMAGE, "hires_fix": HiresFixSpec()},
        ".hiresFix",
    ),
    (
        "hiresFix-too-large",
        {"width": 1536, "hires_fix": HiresFixSpec(scale=3.0)},
        ".hiresFix.scale",
    ),
    ("upscale-without-upscale", {**UPSCALE_ONLY, "upscale": None}, ".upscale"),
    (
        "upscale-too-large",
        {"width": 2048, "upscale": UpscaleSpec(model="tiny-esrgan-x4", scale=4.5)},
        ".upscale.scale",
    ),
    ("upscale-with-loras", {**UPSCALE_ONLY, "loras": [LoraRef(model="tiny-lora")]}, ".mode"),
    ("upscale-with-ipAdapters", {**UPSCALE_ONLY, "ip_adapters": [IP_ADAPTER]}, ".mode"),
    ("txt2vid-with-initImage", {**TXT2VID, "init_image": IMAGE}, ".initImage"),
    (
        "controlNet-and-controlNets",
        {"control_net": CONTROL, "control_nets": [CONTROL]},
        ".controlNet",
    ),
    ("txt2img-with-video", {"video": VideoSpec()}, ".video"),
    ("img2vid-without-video", {**IMG2VID, "video": None}, ".video"),
    ("txt2vid-without-motionAdapter", {**TXT2VID, "video": VideoSpec()}, ".video.motionAdapter"),
    (
        "img2vid-with-motionAdapter",
        {**IMG2VID, "video": VideoSpec(motion_adapter="tiny-motion")},
        ".video.motionAdapter",
    ),
    ("txt2vid-batch-of-2", {**TXT2VID, "batch_size": 2}, ".batchSize"),
    ("txt2vid-with-controlNets", {**TXT2VID, "control_nets": [CONTROL]}, ".mode"),
    ("img2vid-with-loras", {**IMG2VID, "loras": [LoraRef(model="tiny-lora")]}, ".mode"),
    (
        "removeBackground-to-jpeg",
        {"remove_background": REMOVE_BACKGROUND, "output": OutputSpec(format=OutputFormat.JPEG)},
        ".removeBackground",
    ),
]


def spec_with(fields: dict[str, Any]) -> GenerationJobSpec:
    """A valid spec changed by `fields` (snake_case), not validated, as the rules need."""
    return GenerationJobSpec.model_construct(**{**VALID_SPEC, **fields})


def cross_field_rules() -> list[JsonSchema]:
    """The CEL rules on the GenerationJob spec that check a new object (not transitions)."""
    spec = crd_part("generationjobs", "spec")
    return [rule for rule in rules(spec) if not is_transition_rule(rule)]


@pytest.mark.parametrize(
    ("fields", "field_path"),
    [case[1:] for case in CROSS_FIELD_CASES],
    ids=[case[0] for case in CROSS_FIELD_CASES],
)
def test_cel_rule_has_the_models_message(fields: dict[str, Any], field_path: str) -> None:
    violations = spec_rule_violations(spec_with(fields))
    assert len(violations) == 1, violations
    matching = [rule for rule in cross_field_rules() if rule["message"] == violations[0]]
    assert len(matching) == 1, f"no CEL rule (or several) with the message {violations[0]!r}"
    assert matching[0].get("fieldPath") == field_path


def test_every_cross_field_cel_rule_is_a_rule_of_the_model() -> None:
    model_messages = {
        message
        for _, fields, _ in CROSS_FIELD_CASES
        for message in spec_rule_violations(spec_with(fields))
    }
    assert {rule["message"] for rule in cross_field_rules()} == model_messages
    assert spec_rule_violations(spec_with({})) == []
    assert spec_rule_violations(spec_with(UPSCALE_ONLY)) == []
    assert spec_rule_violations(spec_with({**IMG2VID, "prompt": ""})) == []
    assert spec_rule_violations(spec_with(TXT2VID)) == []
    object_removal = {"mode": Mode.INPAINT, "init_image": IMAGE, "mask_image": IMAGE}
    assert spec_rule_violations(spec_with({**object_removal, "prompt": ""})) == []


def test_generationjob_spec_is_immutable_except_cancel() -> None:
    """Every field keeps its value; optional ones (with the fields whose default only the
    model has) also stay present or absent."""
    spec = crd_part("generationjobs", "spec")
    for name, field in spec["properties"].items():
        expected = (
            {"rule": "self || !oldSelf", "message": "cancel may only change from false to true"}
            if name == "cancel"
            else {"rule": "self == oldSelf", "message": f"{name} is immutable"}
        )
        # The deprecated controlNet also has the rule of every ControlNet entry.
        own = [rule for rule in rules(field) if rule["message"] != GUIDANCE_WINDOW_RULE]
        assert own == [expected], f"spec.{name}"

    model = model_schema(GenerationJobSpec)
    optional = [
        name
        for name, field in model["properties"].items()
        if name not in model.get("required", [])
        and ("default" not in field or name in MODEL_ONLY_DEFAULTS)
    ]
    presence = [
        {
            "rule": f"has(self.{name}) == has(oldSelf.{name})",
            "message": f"{name} is immutable",
            "fieldPath": f".{name}",
        }
        for name in optional
    ]
    assert [rule for rule in rules(spec) if is_transition_rule(rule)] == presence


def test_trainingjob_spec_is_immutable_except_cancel() -> None:
    """Every field keeps its value; seed and placeholder, the optional fields without a
    default, also stay present or absent."""
    spec = crd_part("trainingjobs", "spec")
    for name, field in spec["properties"].items():
        expected = (
            {"rule": "self || !oldSelf", "message": "cancel may only change from false to true"}
            if name == "cancel"
            else {"rule": "self == oldSelf", "message": f"{name} is immutable"}
        )
        assert rules(field) == [expected], f"spec.{name}"
    model = model_schema(training_job.TrainingJobSpec)
    optional = [
        name
        for name, field in model["properties"].items()
        if name not in model.get("required", []) and "default" not in field
    ]
    assert optional == ["placeholder", "seed"]
    assert [rule for rule in rules(spec) if is_transition_rule(rule)] == [
        {
            "rule": f"has(self.{name}) == has(oldSelf.{name})",
            "message": f"{name} is immutable",
            "fieldPath": f".{name}",
        }
        for name in ("seed", "placeholder")
    ]


TRAINING_SPEC: dict[str, Any] = {
    "base_model": "sd15",
    "dataset": "s3://datasets/zorp/",
    "output": training_job.TrainingOutput(name="zorp-style"),
}
INVERSION: dict[str, Any] = {"method": "textual-inversion", "placeholder": "zorp"}
TRAINING_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("inversion-without-placeholder", {**INVERSION, "placeholder": None}, ".placeholder"),
    ("lora-with-placeholder", {"placeholder": "zorp"}, ".placeholder"),
    (
        "inversion-training-text-encoder",
        {**INVERSION, "train_text_encoder": True},
        ".trainTextEncoder",
    ),
]


def training_with(fields: dict[str, Any]) -> training_job.TrainingJobSpec:
    """A TrainingJob spec changed by `fields` (snake_case), not validated."""
    defaults = training_job.TrainingJobSpec.model_construct(**TRAINING_SPEC).model_dump()
    values = {**defaults, **TRAINING_SPEC, **fields}
    values["method"] = training_job.TrainingMethod(values["method"])
    return training_job.TrainingJobSpec.model_construct(**values)


@pytest.mark.parametrize(
    ("fields", "field_path"),
    [case[1:] for case in TRAINING_CASES],
    ids=[case[0] for case in TRAINING_CASES],
)
def test_trainingjob_cel_rule_has_the_models_message(
    fields: dict[str, Any], field_path: str
) -> None:
    violations = training_job.training_rule_violations(training_with(fields))
    assert len(violations) == 1, violations
    matching = [
        rule for rule in rules(crd_part("trainingjobs", "spec")) if rule["message"] == violations[0]
    ]
    assert len(matching) == 1, f"no CEL rule (or several) with the message {violations[0]!r}"
    assert matching[0].get("fieldPath") == field_path
    with pytest.raises(ValueError, match=re.escape(violations[0])):
        training_job.TrainingJobSpec.model_validate(training_with(fields).model_dump())


def test_every_trainingjob_cel_rule_is_a_rule_of_the_model() -> None:
    messages = set()
    for _, fields, _ in TRAINING_CASES:
        messages.update(training_job.training_rule_violations(training_with(fields)))
    cross_field = [r for r in rules(crd_part("trainingjobs", "spec")) if not is_transition_rule(r)]
    assert {rule["message"] for rule in cross_field} == messages
    for valid in ({}, INVERSION):
        assert training_job.training_rule_violations(training_with(valid)) == [], valid


@pytest.mark.parametrize("path", ["controlNet", "controlNets[]"])
def test_controlnet_entry_rule_has_the_models_message(path: str) -> None:
    spec = crd_part("generationjobs", "spec")
    name, _, items = path.partition("[")
    entry = spec["properties"][name]["items"] if items else spec["properties"][name]
    assert [rule for rule in rules(entry) if not is_transition_rule(rule)] == [
        {
            "rule": "self.guidanceStart < self.guidanceEnd",
            "message": GUIDANCE_WINDOW_RULE,
            "fieldPath": ".guidanceStart",
        }
    ]
    with pytest.raises(ValueError, match=GUIDANCE_WINDOW_RULE):
        ControlNetSpec(model="cn-canny", image=IMAGE, guidance_start=0.5, guidance_end=0.5)
    ControlNetSpec(model="cn-canny", image=IMAGE, guidance_start=0.4, guidance_end=0.5)


def test_modelcache_source_is_immutable() -> None:
    spec = crd_part("modelcaches", "spec")
    assert rules(spec["properties"]["source"]) == [
        {"rule": "self == oldSelf", "message": "source is immutable"}
    ]
    others = [name for name, field in spec["properties"].items() if rules(field)]
    assert others == ["source"]
    assert not any(is_transition_rule(rule) for rule in rules(spec))


MODEL_SPEC: dict[str, Any] = {"source": "s3://models/m/", "format": "diffusers"}


def model_cache_with(fields: dict[str, Any]) -> ModelCacheSpec:
    """A ModelCache spec changed by `fields` (snake_case), not validated."""
    values = {**MODEL_SPEC, **fields}
    values |= {"type": ModelType(values["type"]), "format": ModelFormat(values["format"])}
    return ModelCacheSpec.model_construct(**values)


CHECKPOINT_CACHE: dict[str, Any] = {"type": "checkpoint", "base_model": "sd15"}
DETECTOR: dict[str, Any] = {"type": "detector", "control_type": "depth"}
IP_ADAPTER_CACHE: dict[str, Any] = {
    "type": "ip-adapter",
    "format": "safetensors",
    "base_model": "sd15",
    "image_encoder": "tiny-clip",
}
MOTION_ADAPTER: dict[str, Any] = {"type": "motion-adapter", "base_model": "sd15"}
MODEL_CACHE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("checkpoint-without-baseModel", {"type": "checkpoint"}, ".baseModel"),
    ("upscaler-with-baseModel", {"type": "upscaler", "base_model": "sd15"}, ".baseModel"),
    (
        "embedding-folder",
        {"type": "embedding", "base_model": "sd15", "format": "diffusers"},
        ".format",
    ),
    ("restorer-folder", {"type": "restorer", "format": "diffusers"}, ".format"),
    ("safety-single-file", {"type": "safety", "format": "safetensors"}, ".format"),
    ("detector-with-baseModel", {**DETECTOR, "base_model": "sd15"}, ".baseModel"),
    ("ip-adapter-folder", {**IP_ADAPTER_CACHE, "format": "diffusers"}, ".format"),
    ("motion-adapter-single-file", {**MOTION_ADAPTER, "format": "safetensors"}, ".format"),
    (
        "controlnet-without-controlType",
        {"type": "controlnet", "base_model": "sd15"},
        ".controlType",
    ),
    (
        "lora-with-controlType",
        {"type": "lora", "base_model": "sd15", "control_type": "canny"},
        ".controlType",
    ),
    ("detector-of-canny", {**DETECTOR, "control_type": "canny"}, ".controlType"),
    (
        "ip-adapter-without-imageEncoder",
        {**IP_ADAPTER_CACHE, "image_encoder": None},
        ".imageEncoder",
    ),
    (
        "checkpoint-with-imageEncoder",
        {**CHECKPOINT_CACHE, "image_encoder": "tiny-clip"},
        ".imageEncoder",
    ),
]


@pytest.mark.parametrize(
    ("fields", "field_path"),
    [case[1:] for case in MODEL_CACHE_CASES],
    ids=[case[0] for case in MODEL_CACHE_CASES],
)
def test_modelcache_cel_rule_has_the_models_message(
    fields: dict[str, Any], field_path: str
) -> None:
    violations = model_cache_rule_violations(model_cache_with(fields))
    assert len(violations) == 1, violations
    matching = [
        rule for rule in rules(crd_part("modelcaches", "spec")) if rule["message"] == violations[0]
    ]
    assert len(matching) == 1, f"no CEL rule (or several) with the message {violations[0]!r}"
    assert matching[0].get("fieldPath") == field_path


def test_every_modelcache_cel_rule_is_a_rule_of_the_model() -> None:
    messages = set()
    for _, fields, _ in MODEL_CACHE_CASES:
        messages.update(model_cache_rule_violations(model_cache_with(fields)))
    assert {rule["message"] for rule in rules(crd_part("modelcaches", "spec"))} == messages
    for valid in (CHECKPOINT_CACHE, DETECTOR, IP_ADAPTER_CACHE, MOTION_ADAPTER):
        assert model_cache_rule_violations(model_cache_with(valid)) == [], valid


POOL_SPEC: dict[str, Any] = {"gpu_type": "a100", "vram_gib": 80.0, "max_replicas": 4}


def test_gpupool_cel_rules_have_the_models_messages() -> None:
    spec = crd_part("gpupools", "spec")
    too_few = GPUPoolSpec.model_construct(**{**POOL_SPEC, "min_replicas": 5})
    assert gpu_pool_rule_violations(too_few) == [gpu_pool.MAX_REPLICAS_RULE]
    assert gpu_pool_rule_violations(GPUPoolSpec.model_construct(**POOL_SPEC)) == []
    assert rules(spec) == [
        {
            "rule": "self.maxReplicas >= self.minReplicas",
            "message": gpu_pool.MAX_REPLICAS_RULE,
            "fieldPath": ".maxReplicas",
        }
    ]
    assert rules(spec["properties"]["gpuType"]) == [
        {"rule": "self != 'any'", "message": gpu_pool.ANY_GPU_TYPE_RULE}
    ]
    with pytest.raises(ValueError, match=gpu_pool.ANY_GPU_TYPE_RULE):
        GPUPoolSpec(**{**POOL_SPEC, "gpu_type": ANY_GPU_CLASS})


def test_stylepreset_crd_names_and_columns() -> None:
    """A namespaced StylePreset (`kubectl get sp`), without status: nothing writes one."""
    definition = crd(style_preset.PLURAL)
    names = definition["spec"]["names"]
    assert definition["metadata"]["name"] == "stylepresets.diffleet.io"
    assert definition["spec"]["scope"] == "Namespaced"
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        style_preset.KIND,
        style_preset.PLURAL,
        ["sp"],
    )
    assert "diffleet" in names["categories"]
    version = definition["spec"]["versions"][0]
    assert "subresources" not in version
    printed = [
        (column["name"], column["jsonPath"]) for column in version["additionalPrinterColumns"]
    ]
    assert printed == [
        ("Sampler", ".spec.sampler"),
        ("Steps", ".spec.steps"),
        ("Width", ".spec.width"),
        ("Height", ".spec.height"),
        ("Description", ".spec.description"),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_stylepreset_placeholder_rule_has_the_models_message() -> None:
    assert rules(crd_part("stylepresets", "spec")) == [
        {
            "rule": "!has(self.prompt) || self.prompt.contains('{prompt}')",
            "message": style_preset.PLACEHOLDER_RULE,
            "fieldPath": ".prompt",
        }
    ]
    with pytest.raises(ValueError, match=re.escape(style_preset.PLACEHOLDER_RULE)):
        style_preset.StylePresetSpec(prompt="a watercolor painting")
