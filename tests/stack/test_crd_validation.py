"""The API server enforces the CRDs: ranges, enums, cross-field rules, defaults, immutability.

Every case goes through `kubectl apply`, and a refusal's error must name the field and the
broken rule, as a user reads it. New objects are judged in two server-side dry runs
(`kubectl apply --dry-run=server` of them all in one stream): one of the manifests that
must be refused (BAD_JOBS, BAD_CACHES and the generation features' specs of
tests/support/generation_specs.py, which the API tests POST too), one of those that must
be accepted, whose answer shows the defaults the API server fills in. A dry run takes
each object through schema, CEL rules, defaulting and admission as a create would, and
stores none: no namespace is needed. Changes to a stored object (immutability) need
objects that exist: they are created for real in the module's one namespace, all in one
apply, and changed in one more; so is each object whose storing or listing is checked.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.resources.model_cache import BASE_MODEL_RULE
from tests.support import generation_specs
from tests.support.generation_specs import (
    ACCEPTED,
    REFUSED,
    REFUSED_CACHES,
    Accepted,
    Refused,
    changed,
)
from tests.support.stack import ROOT, Kubectl

IMAGE = "s3://diffleet-uploads/in.png"
MASK = "s3://diffleet-uploads/mask.png"
VALID_JOB: dict[str, Any] = {"model": "sd15-base", "prompt": "a lighthouse at dusk"}
VALID_CACHE: dict[str, Any] = {
    "source": "s3://diffleet-models/sd15-base/",
    "format": "diffusers",
    "baseModel": "sd15",
}


def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A diffleet.io/v1alpha1 object."""
    return {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def manifest(kind: str, name: str, spec: dict[str, Any]) -> str:
    """A diffleet.io/v1alpha1 object as JSON, which kubectl reads as YAML."""
    return json.dumps(resource(kind, name, spec))


def stream(objects: list[dict[str, Any]]) -> str:
    """Objects as one YAML stream, which `kubectl apply` takes one after another."""
    return "\n---\n".join(json.dumps(item) for item in objects)


def apply(kubectl: Kubectl, namespace: str, text: str, *flags: str) -> str:
    """Applies `text` and returns stderr; fails the test when the API server accepts it."""
    result = kubectl.run("apply", *flags, "-n", namespace, "-f", "-", stdin=text, check=False)
    assert result.returncode != 0, f"accepted: {result.stdout.strip()}"
    return result.stderr


# How kubectl reports an object the API server refused, one line each (a create's
# error names the object as `GenerationJob.diffleet.io "name"`, a patch's as
# `The GenerationJob "name"`).
REFUSAL_LINE = re.compile(r'"(?P<name>[a-z0-9.-]+)" is invalid: (?P<error>.*)')


@dataclass(frozen=True)
class Verdicts:
    """What the API server made of each object of one `kubectl apply`."""

    refused: dict[str, str]  # error by object name
    accepted: dict[str, dict[str, Any]]  # as stored, or as a dry run would (defaults in)
    output: str  # kubectl's stdout and stderr, to show when a case went the other way

    def refusal(self, name: str) -> str:
        """The API server's error on the object `name`; fails the test if it took it."""
        assert name in self.refused, f"{name} not refused:\n{self.output}"
        return self.refused[name]

    def acceptance(self, name: str) -> dict[str, Any]:
        """The object `name` as the API server stored it (or would have); fails the test
        if it refused it."""
        assert name in self.accepted, f"{name} refused: {self.refused.get(name)}"
        return self.accepted[name]


def apply_all(
    kubectl: Kubectl, objects: list[dict[str, Any]], namespace: str, *flags: str
) -> Verdicts:
    """Applies `objects` in one stream. kubectl goes on past a refused object and names
    each refused one; it prints the accepted ones only when it refused none."""
    names = [item["metadata"]["name"] for item in objects]
    assert len(set(names)) == len(names), "kubectl's errors tell objects apart by name only"
    result = kubectl.run(
        "apply", *flags, "-n", namespace, "-o", "json", "-f", "-",
        stdin=stream(objects), check=False,
    )  # fmt: skip
    printed = json.loads(result.stdout) if result.stdout.strip() else {}
    items = printed["items"] if printed.get("kind") == "List" else [printed]
    return Verdicts(
        refused={m["name"]: m["error"] for m in REFUSAL_LINE.finditer(result.stderr)},
        accepted={item["metadata"]["name"]: item for item in items if "metadata" in item},
        output=f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}",
    )


def dry_run(kubectl: Kubectl, objects: list[dict[str, Any]]) -> Verdicts:
    """`apply_all` with `--dry-run=server`: the API server validates, defaults and admits
    each object as for a real create and stores none, so any namespace will do."""
    return apply_all(kubectl, objects, "default", "--dry-run=server")


# The messages of the CRD's cross-field rules (spec_rule_violations in diffleet_core).
INIT_REQUIRED = "initImage is required unless mode is txt2img or txt2vid"
INIT_NOT_ALLOWED = "initImage is not allowed when mode is txt2img or txt2vid"
MASK_RULE = "maskImage is required when, and only when, mode is inpaint"
STRENGTH_RULE = "strength is allowed only with an initImage, and not in mode upscale"


def cel_error(field: str, value_type: str, message: str) -> str:
    """How the API server reports a broken CEL rule whose error is reported at spec.FIELD."""
    return f'spec.{field}: Invalid value: "{value_type}": {message}'


# (id, overrides on VALID_JOB, expected error); the refused object is named after the id
# in lower case, as object names are.
BAD_JOBS: list[tuple[str, dict[str, Any], str]] = [
    ("width-513", {"width": 513}, "spec.width in body should be a multiple of 8"),
    ("width-32", {"width": 32}, "spec.width in body should be greater than or equal to 64"),
    ("height-4096", {"height": 4096}, "spec.height in body should be less than or equal to 2048"),
    ("steps-0", {"steps": 0}, "spec.steps in body should be greater than or equal to 1"),
    ("steps-151", {"steps": 151}, "spec.steps in body should be less than or equal to 150"),
    ("unknown-sampler", {"sampler": "turbo"}, 'spec.sampler: Unsupported value: "turbo"'),
    (
        "inpaint-without-mask",
        {"mode": "inpaint", "initImage": IMAGE},
        cel_error("maskImage", "object", MASK_RULE),
    ),
    ("mask-on-txt2img", {"maskImage": MASK}, cel_error("maskImage", "object", MASK_RULE)),
    (
        "img2img-without-initImage",
        {"mode": "img2img"},
        cel_error("initImage", "object", INIT_REQUIRED),
    ),
    (
        "initImage-on-txt2img",
        {"initImage": IMAGE},
        cel_error("initImage", "object", INIT_NOT_ALLOWED),
    ),
    ("strength-on-txt2img", {"strength": 0.5}, cel_error("strength", "object", STRENGTH_RULE)),
    (
        "prompt-2001-characters",
        {"prompt": "x" * 2001},
        "spec.prompt: Too long: may not be more than 2000 bytes",
    ),
    (
        "empty-prompt",
        {"prompt": ""},
        cel_error(
            "prompt",
            "object",
            "prompt must not be empty unless mode is inpaint, upscale or img2vid",
        ),
    ),
    (
        "negative-batchSize",
        {"batchSize": -1},
        "spec.batchSize in body should be greater than or equal to 1",
    ),
    ("batchSize-9", {"batchSize": 9}, "spec.batchSize in body should be less than or equal to 8"),
    ("priority-platinum", {"priority": "platinum"}, 'spec.priority: Unsupported value: "platinum"'),
    ("gpuClass-not-dns", {"gpuClass": "H100"}, "spec.gpuClass in body should match"),
    (
        "guidanceScale-31",
        {"guidanceScale": 31},
        "spec.guidanceScale in body should be less than or equal to 30",
    ),
    (
        "initImage-not-s3",
        {"mode": "img2img", "initImage": "https://example.com/in.png"},
        "spec.initImage in body should match '^s3://",
    ),
    (
        "lora-weight-3",
        {"loras": [{"model": "ink-style", "weight": 3}]},
        "spec.loras[0].weight in body should be less than or equal to 2",
    ),
    (
        "six-loras",
        {"loras": [{"model": f"lora-{index}"} for index in range(6)]},
        "spec.loras: Too many: 6: must have at most 5 items",
    ),
    (
        "missing-model",
        {"model": None},
        cel_error("model", "object", "model is required unless mode is upscale"),
    ),
    ("model-not-a-name", {"model": "SD15_Base"}, "spec.model in body should match"),
    (
        "seed-above-uint32",
        {"seed": 2**32},
        "spec.seed in body should be less than or equal to 4294967295",
    ),
    (
        "strength-above-1",
        {"mode": "img2img", "initImage": IMAGE, "strength": 1.5},
        "spec.strength in body should be less than or equal to 1",
    ),
    (
        "controlNet-without-image",
        {"controlNet": {"model": "cn-canny"}},
        "spec.controlNet.image: Required value",
    ),
    (
        "webhook-not-http",
        {"webhookUrl": "ftp://example.com/hook"},
        "spec.webhookUrl in body should match",
    ),
    (
        "timeout-0",
        {"timeoutSeconds": 0},
        "spec.timeoutSeconds in body should be greater than or equal to 1",
    ),
    # The characters every spec string refuses (diffleet_core.resources.text), and URLs
    # that match a loose pattern but not the parser that would use them.
    ("prompt-nul", {"prompt": "a\x00b"}, "spec.prompt in body should match"),
    ("prompt-escape", {"prompt": "a\x1bb"}, "spec.prompt in body should match"),
    ("negativePrompt-bell", {"negativePrompt": "\x07"}, "spec.negativePrompt in body should match"),
    ("model-nul", {"model": "sd15\x00"}, "spec.model in body should match"),
    (
        "initImage-empty-segment",
        {"mode": "img2img", "initImage": "s3://diffleet-uploads//in.png"},
        "spec.initImage in body should match",
    ),
    (
        "initImage-no-bucket",
        {"mode": "img2img", "initImage": "s3:///in.png"},
        "spec.initImage in body should match",
    ),
    (
        "maskImage-dot-dot",
        {"mode": "inpaint", "initImage": IMAGE, "maskImage": "s3://diffleet-uploads/a/../b.png"},
        "spec.maskImage in body should match",
    ),
    (
        "controlNet-image-nul",
        {"controlNet": {"model": "cn", "image": IMAGE + "\x00"}},
        "spec.controlNet.image in body should match",
    ),
    ("webhook-empty-host", {"webhookUrl": "https://:80/x"}, "spec.webhookUrl in body should match"),
    (
        "webhook-port-99999",
        {"webhookUrl": "https://example.com:99999/x"},
        "spec.webhookUrl in body should match",
    ),
    (
        "webhook-port-abc",
        {"webhookUrl": "https://example.com:abc/x"},
        "spec.webhookUrl in body should match",
    ),
]

# (id, overrides on VALID_CACHE, expected error), named as BAD_JOBS are.
BAD_CACHES: list[tuple[str, dict[str, Any], str]] = [
    ("format-ckpt", {"format": "ckpt"}, 'spec.format: Unsupported value: "ckpt"'),
    ("source-not-s3", {"source": "/models/sd15"}, "spec.source in body should match '^s3://"),
    (
        "missing-baseModel",
        {"baseModel": None},
        cel_error("baseModel", "object", BASE_MODEL_RULE),
    ),
    ("sha256-not-hex", {"sha256": "abc"}, "spec.sha256 in body should match"),
    ("pool-not-dns", {"pools": ["h100", "a_100"]}, "spec.pools[1] in body should match"),
    (
        "source-empty-segment",
        {"source": "s3://diffleet-models//sd15/"},
        "spec.source in body should match",
    ),
    (
        "source-nul",
        {"source": "s3://diffleet-models/sd15\x00/"},
        "spec.source in body should match",
    ),
    ("sha256-nul", {"sha256": "a" * 63 + "\x00"}, "spec.sha256 in body should match"),
    (
        "warm-1001",
        {"warm": {"replicas": 1001}},
        "spec.warm.replicas in body should be less than or equal to 1000",
    ),
]

# ModelCaches of the new types that break a rule on one field.
BAD_NEW_CACHES: list[tuple[str, dict[str, Any], str]] = [
    (
        "type-tokenizer",
        changed(VALID_CACHE, {"type": "tokenizer"}),
        'spec.type: Unsupported value: "tokenizer"',
    ),
] + [(case.id, case.spec, cel_error(case.field, "object", case.message)) for case in REFUSED_CACHES]
# (id, overrides on VALID_CACHE) of a valid ModelCache of each new type and format.
NEW_CACHES: list[tuple[str, dict[str, Any]]] = [
    ("esrgan", {"type": "upscaler", "format": "safetensors", "baseModel": None}),
    ("sd-x4-upscaler", {"type": "upscaler", "baseModel": None}),
    ("restoreformer", {"type": "restorer", "format": "safetensors", "baseModel": None}),
    ("safety-checker", {"type": "safety", "baseModel": None}),
    ("easynegative", {"type": "embedding", "format": "safetensors"}),
    ("vae-folder", {"type": "vae"}),
    ("vae-single-file", {"type": "vae", "format": "safetensors"}),
    ("controlnet-depth", {"type": "controlnet", "controlType": "depth"}),
    ("t2i-adapter-canny", {"type": "t2i-adapter", "controlType": "canny"}),
    ("dpt-depth", {"type": "detector", "controlType": "depth", "baseModel": None}),
    (
        "ip-adapter",
        {"type": "ip-adapter", "format": "safetensors", "imageEncoder": "clip-vision"},
    ),
    ("clip-vision", {"type": "image-encoder", "baseModel": None}),
    ("animatediff", {"type": "motion-adapter"}),
    ("rmbg", {"type": "background-remover", "baseModel": None}),
    ("svd-checkpoint", {"baseModel": "svd"}),
]
# The GenerationJobs of manifests/examples/, one per feature (hack/demo.sh applies some).
EXAMPLE_JOBS = [
    document
    for path in sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
    for document in yaml.safe_load_all(path.read_text())
    if document["kind"] == "GenerationJob"
]


# Where the specs' image URIs point (any prefix will do for the API server).
EXAMPLES = "examples"


def job(case: Refused | Accepted) -> dict[str, Any]:
    return resource("GenerationJob", case.id, generation_specs.resolved(case.spec, EXAMPLES))


# The minimal and the full GenerationJob and the minimal ModelCache, whose defaults the
# acceptances show.
MINIMAL_JOB = resource("GenerationJob", "minimal", VALID_JOB)
FULL_JOB = resource(
    "GenerationJob",
    "full",
    changed(
        VALID_JOB,
        {
            "mode": "inpaint",
            "initImage": IMAGE,
            "maskImage": MASK,
            "strength": 0.6,
            "seed": 42,
            "loras": [{"model": "ink-style"}],
            "controlNet": {"model": "cn-canny", "image": IMAGE},
            "priority": "standard",
            "gpuClass": "h100",
            "webhookUrl": "https://example.com/hook",
        },
    ),
)
MINIMAL_CACHE = resource("ModelCache", "minimal-cache", VALID_CACHE)


@pytest.fixture(scope="module")
def refusals(kubectl: Kubectl) -> Verdicts:
    objects = [
        resource("GenerationJob", id.lower(), changed(VALID_JOB, overrides))
        for id, overrides, _ in BAD_JOBS
    ]
    objects += [
        resource("ModelCache", id.lower(), changed(VALID_CACHE, overrides))
        for id, overrides, _ in BAD_CACHES
    ]
    objects += [job(case) for case in REFUSED]
    objects += [
        resource("ModelCache", name, generation_specs.resolved(spec, EXAMPLES))
        for name, spec, _ in BAD_NEW_CACHES
    ]
    return dry_run(kubectl, objects)


@pytest.fixture(scope="module")
def acceptances(kubectl: Kubectl) -> Verdicts:
    objects = [MINIMAL_JOB, FULL_JOB, MINIMAL_CACHE]
    objects += [job(case) for case in ACCEPTED] + EXAMPLE_JOBS
    objects += [
        resource("ModelCache", name, changed(VALID_CACHE, overrides))
        for name, overrides in NEW_CACHES
    ]
    return dry_run(kubectl, objects)


@pytest.mark.parametrize(
    ("id", "expected"),
    [case[::2] for case in BAD_JOBS + BAD_CACHES],
    ids=[case[0] for case in BAD_JOBS + BAD_CACHES],
)
def test_bad_generationjob_or_modelcache_is_refused_naming_the_field(
    refusals: Verdicts, id: str, expected: str
) -> None:
    assert expected in refusals.refusal(id.lower())


def test_generationjob_with_an_unknown_field_is_refused_naming_it(kubectl: Kubectl) -> None:
    """Judged alone: the API server refuses it while decoding, before it reads the
    object's name, so the error names no object to tell it apart in a stream."""
    bad = manifest("GenerationJob", "bad", changed(VALID_JOB, {"lighting": "soft"}))
    assert 'unknown field "spec.lighting"' in apply(kubectl, "default", bad, "--dry-run=server")


REFUSED_UPDATES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "steps-changed",
        {"steps": 20},
        {"steps": 30},
        cel_error("steps", "integer", "steps is immutable"),
    ),
    # absent: the style's value, else the model's default (20); so never added later
    ("steps-added", {}, {"steps": 20}, cel_error("steps", "object", "steps is immutable")),
    (
        "prompt-changed",
        {},
        {"prompt": "a lighthouse at dawn"},
        cel_error("prompt", "string", "prompt is immutable"),
    ),
    ("seed-added", {}, {"seed": 42}, cel_error("seed", "object", "seed is immutable")),
    ("seed-changed", {"seed": 42}, {"seed": 43}, cel_error("seed", "integer", "seed is immutable")),
    (
        "priority-removed",
        {"priority": "free"},
        {"priority": None},
        cel_error("priority", "object", "priority is immutable"),
    ),
    (
        "lora-weight-changed",
        {"loras": [{"model": "ink-style", "weight": 0.8}]},
        {"loras": [{"model": "ink-style", "weight": 0.9}]},
        cel_error("loras", "array", "loras is immutable"),
    ),
    (
        "cancel-true-to-false",
        {"cancel": True},
        {"cancel": False},
        cel_error("cancel", "boolean", "cancel may only change from false to true"),
    ),
]

# Beside the refused changes, the one a stored job accepts.
CANCELLED = "cancel-false-to-true"


@dataclass(frozen=True)
class Updates:
    """The changes of REFUSED_UPDATES and CANCELLED, applied to stored jobs."""

    verdicts: Verdicts
    stored: dict[str, dict[str, Any]]  # each job as stored after its change, by name


@pytest.fixture(scope="module")
def updates(kubectl: Kubectl, module_namespace: str) -> Updates:
    """Creates a job of each case, all in one apply, then applies each case's change in
    one more; then reads back the namespace's jobs."""
    created = {id: changed(VALID_JOB, spec) for id, spec, _, _ in REFUSED_UPDATES}
    created[CANCELLED] = VALID_JOB
    kubectl.apply(
        stream([resource("GenerationJob", id, spec) for id, spec in created.items()]),
        module_namespace,
    )
    changes = {id: update for id, _, update, _ in REFUSED_UPDATES}
    changes[CANCELLED] = {"cancel": True}
    verdicts = apply_all(
        kubectl,
        [resource("GenerationJob", id, changed(created[id], changes[id])) for id in created],
        module_namespace,
    )
    listed = kubectl.json("get", "gj", "-n", module_namespace)["items"]
    return Updates(verdicts, {item["metadata"]["name"]: item for item in listed})


@pytest.mark.parametrize(
    ("id", "expected"),
    [case[::3] for case in REFUSED_UPDATES],
    ids=[case[0] for case in REFUSED_UPDATES],
)
def test_generationjob_spec_change_is_refused(updates: Updates, id: str, expected: str) -> None:
    assert expected in updates.verdicts.refusal(id)
    assert updates.stored[id]["metadata"]["generation"] == 1


def test_generationjob_cancel_may_change_from_false_to_true(updates: Updates) -> None:
    assert CANCELLED not in updates.verdicts.refused, updates.verdicts.refused[CANCELLED]
    stored = updates.stored[CANCELLED]
    assert stored["spec"]["cancel"] is True
    assert stored["metadata"]["generation"] == 2


def test_minimal_generationjob_shows_the_schema_defaults(acceptances: Verdicts) -> None:
    """width, height, steps and sampler stay absent: a style preset fills them, else the
    model's defaults apply (diffleet_core)."""
    spec = acceptances.acceptance("minimal")["spec"]
    assert spec == {
        "model": "sd15-base",
        "prompt": "a lighthouse at dusk",
        "mode": "txt2img",
        "negativePrompt": "",
        "guidanceScale": 7,
        "batchSize": 1,
        "gpuClass": "any",
        "timeoutSeconds": 600,
        "maxRetries": 2,
        "ttlSecondsAfterFinished": 86400,
        "cancel": False,
        "output": {"format": "png", "quality": 90},
    }
    assert "priority" not in spec
    assert "strength" not in spec


def test_full_generationjob_is_accepted_with_nested_defaults(acceptances: Verdicts) -> None:
    spec = acceptances.acceptance("full")["spec"]
    assert spec["loras"] == [{"model": "ink-style", "weight": 1}]
    assert spec["controlNet"] == {
        "model": "cn-canny",
        "image": IMAGE,
        "preprocess": "auto",
        "conditioningScale": 1,
        "guidanceStart": 0,
        "guidanceEnd": 1,
    }
    assert (spec["strength"], spec["seed"], spec["priority"]) == (0.6, 42, "standard")


def test_other_unicode_is_accepted_and_kept(kubectl: Kubectl, module_namespace: str) -> None:
    """Only NUL, C0 controls (but tab, newline, carriage return) and lone surrogates are
    refused: emoji, CJK, right-to-left text and combining marks are stored as sent."""
    prompt = "🎨 灯台 منارة e\u0301 tab\tnewline\n"
    kubectl.apply(
        manifest("GenerationJob", "unicode", changed(VALID_JOB, {"prompt": prompt})),
        module_namespace,
    )
    stored = kubectl.json("get", "gj", "unicode", "-n", module_namespace)
    assert stored["spec"]["prompt"] == prompt


def test_generationjob_lists_with_its_printer_columns(
    kubectl: Kubectl, module_namespace: str
) -> None:
    kubectl.apply(manifest("GenerationJob", "columns", VALID_JOB), module_namespace)
    header = kubectl.run("get", "gj", "columns", "-n", module_namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "PHASE", "MODEL", "TIER", "POOL", "STEP", "STEPS", "AGE"]


def test_kubectl_explain_describes_the_spec(kubectl: Kubectl) -> None:
    steps = kubectl.run("explain", "generationjob.spec.steps").stdout
    assert "Denoising steps" in steps
    spec = kubectl.run("explain", "generationjob.spec").stdout
    for field in ("model", "prompt", "guidanceScale", "controlNet", "ttlSecondsAfterFinished"):
        assert f"  {field}\t" in spec, field


def test_minimal_modelcache_shows_the_schema_defaults(acceptances: Verdicts) -> None:
    name = MINIMAL_CACHE["metadata"]["name"]
    spec = acceptances.acceptance(name)["spec"]
    assert spec == {**VALID_CACHE, "type": "checkpoint", "vramGiB": 4, "warm": {"replicas": 0}}


def test_modelcache_source_is_immutable_but_warm_is_not(
    kubectl: Kubectl, module_namespace: str
) -> None:
    kubectl.apply(manifest("ModelCache", "sd15-base", VALID_CACHE), module_namespace)
    moved = changed(VALID_CACHE, {"source": "s3://diffleet-models/sd15-other/"})
    stderr = apply(kubectl, module_namespace, manifest("ModelCache", "sd15-base", moved))
    assert cel_error("source", "string", "source is immutable") in stderr

    warmer = changed(VALID_CACHE, {"warm": {"replicas": 2}})
    kubectl.apply(manifest("ModelCache", "sd15-base", warmer), module_namespace)
    spec = kubectl.json("get", "mc", "sd15-base", "-n", module_namespace)["spec"]
    assert (spec["source"], spec["warm"]) == (VALID_CACHE["source"], {"replicas": 2})


# -- the generation features -----------------------------------------------------------


@pytest.mark.parametrize("case", REFUSED, ids=[case.id for case in REFUSED])
def test_bad_generation_feature_is_refused_naming_the_field(
    refusals: Verdicts, case: Refused
) -> None:
    assert case.kubectl in refusals.refusal(case.id)


@pytest.mark.parametrize(
    ("name", "expected"),
    [case[::2] for case in BAD_NEW_CACHES],
    ids=[case[0] for case in BAD_NEW_CACHES],
)
def test_bad_modelcache_of_a_new_type_is_refused_naming_the_field(
    refusals: Verdicts, name: str, expected: str
) -> None:
    assert expected in refusals.refusal(name)


@pytest.mark.parametrize(
    "name",
    [case.id for case in ACCEPTED] + [name for name, _ in NEW_CACHES],
)
def test_generation_feature_and_new_modelcache_type_are_accepted(
    acceptances: Verdicts, name: str
) -> None:
    acceptances.acceptance(name)


@pytest.mark.parametrize(
    "example", EXAMPLE_JOBS, ids=[example["metadata"]["name"] for example in EXAMPLE_JOBS]
)
def test_example_is_accepted_by_both_doors(acceptances: Verdicts, example: dict[str, Any]) -> None:
    """kubectl takes it as it is, and it is a valid spec for the REST API (the model)."""
    name = example["metadata"]["name"]
    acceptances.acceptance(name)
    GenerationJobSpec.model_validate(example["spec"])


def test_generation_features_show_their_defaults(acceptances: Verdicts) -> None:
    specs = {name: item["spec"] for name, item in acceptances.accepted.items()}
    assert specs["outpaint"]["outpaint"] == {
        "left": 0,
        "right": 256,
        "top": 0,
        "bottom": 0,
        "featherPixels": 16,
    }
    assert specs["outpaint"]["output"] == {"format": "png", "quality": 90}
    assert specs["hiresfix"]["hiresFix"] == {
        "scale": 2,
        "strength": 0.5,
        "steps": 10,
        "latent": True,
    }
    upscale_only = specs["upscale-only"]
    assert upscale_only["upscale"] == {
        "model": generation_specs.UPSCALER,
        "scale": 4,
        "tileSize": 512,
    }
    assert (upscale_only["prompt"], "model" in upscale_only) == ("", False)
    assert specs["restorefaces"]["restoreFaces"]["strength"] == 0.8
    assert specs["jpeg"]["output"] == {"format": "jpeg", "quality": 80}
    assert specs["webp"]["output"] == {"format": "webp", "quality": 90}
