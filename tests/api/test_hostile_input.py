"""Bad input at the door, class by class: each is a 4xx problem+json naming the field (or
a 401 for a credential), never a 5xx, against a real API process. All other Unicode
round-trips through Kubernetes and PostgreSQL."""

import base64
import hashlib
import hmac
import json
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from diffleet_api.settings import JWT_AUDIENCE
from diffleet_core.settings import DEVELOPMENT_JWT_SECRET
from tests.api.support import ISSUER, Api, ApiTenant, delete_jobs
from tests.api.test_jobs import SPEC
from tests.support.polling import eventually
from tests.support.stack import Kubectl

PROBLEM_JSON = "application/problem+json"
NUL, ESCAPE, SURROGATE = "\x00", "\x1b", "\ud800"


def send_json(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    """POSTs `body` as JSON with non-ASCII escaped, so that a lone surrogate travels as the
    escape "\\ud800" a client would send (it has no UTF-8 encoding)."""
    content = json.dumps(body, ensure_ascii=True).encode()
    return http.post(path, content=content, headers={"Content-Type": "application/json"})


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem+json body of `response`, after checking its status and media type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def invalid_fields(response: httpx.Response) -> dict[str, str]:
    """{field: rule} of a 422 validation problem."""
    body = problem(response, 422)
    assert body["type"].endswith("/validation")
    return {error["field"]: error["rule"] for error in body["errors"]}


# -- strings: NUL, C0 controls and lone surrogates, in every string of a spec -----------

IMAGE = "s3://diffleet-uploads/{namespace}/in.png"
IMG2IMG = {"mode": "img2img", "initImage": IMAGE}
# (field as the API names it, spec with the bad string put in, by a function of it)
STRING_FIELDS: list[tuple[str, Any]] = [
    ("prompt", lambda bad: {"prompt": f"a lighthouse{bad}"}),
    ("negativePrompt", lambda bad: {"negativePrompt": f"fog{bad}"}),
    ("model", lambda bad: {"model": f"sd15-test{bad}"}),
    ("loras[0].model", lambda bad: {"loras": [{"model": f"ink{bad}"}]}),
    ("initImage", lambda bad: IMG2IMG | {"initImage": f"{IMAGE}{bad}"}),
    (
        "maskImage",
        lambda bad: {"mode": "inpaint", "initImage": IMAGE, "maskImage": f"{IMAGE}{bad}"},
    ),
    ("controlNet.image", lambda bad: {"controlNet": {"model": "cn", "image": f"{IMAGE}{bad}"}}),
    ("webhookUrl", lambda bad: {"webhookUrl": f"https://example.com/hook{bad}"}),
]


@pytest.mark.parametrize(("field", "spec_with"), STRING_FIELDS, ids=[f for f, _ in STRING_FIELDS])
@pytest.mark.parametrize("bad", [NUL, ESCAPE, SURROGATE], ids=["nul", "escape", "surrogate"])
def test_control_characters_in_a_spec_string_are_422_naming_the_field(
    api: Api, tenant: ApiTenant, field: str, spec_with: Any, bad: str
) -> None:
    spec = json.loads(json.dumps(SPEC | spec_with(bad)).replace("{namespace}", tenant.namespace))
    with api.client(tenant.member) as http:
        response = send_json(http, "/v1/jobs", spec)
        batch = send_json(http, "/v1/jobs:batch", {"jobs": [SPEC, spec]})
    assert invalid_fields(response) == {field: "pattern"}
    assert invalid_fields(batch) == {f"jobs[1].{field}": "pattern"}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/jobs", {"cursor": f"abc{NUL}"}, "cursor"),
        ("/v1/jobs", {"cursor": f"abc{ESCAPE}"}, "cursor"),
        ("/v1/jobs", {"model": f"sd15{NUL}"}, "model"),
    ],
    ids=["cursor-nul", "cursor-escape", "model-nul"],
)
def test_control_characters_in_a_query_parameter_are_422_naming_it(
    api: Api, tenant: ApiTenant, path: str, params: dict[str, str], field: str
) -> None:
    with api.client(tenant.member) as http:
        response = http.get(path, params=params)
    assert invalid_fields(response) == {field: "pattern"}


def raw_request(api: Api, request: bytes) -> tuple[int, bytes]:
    """Sends bytes an HTTP client library would refuse to send; (status, body)."""
    address = urlsplit(api.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("header", ["Idempotency-Key", "Last-Event-ID"])
def test_control_characters_in_a_header_are_refused(
    api: Api, tenant: ApiTenant, header: str
) -> None:
    """An escape character in a header value is refused: by the HTTP parser (400) or by
    the route, naming the header (422); never taken."""
    body = json.dumps(SPEC).encode()
    path = "/v1/jobs" if header == "Idempotency-Key" else "/v1/jobs/some-job/events"
    method = "POST" if header == "Idempotency-Key" else "GET"
    status, answer = raw_request(
        api,
        f"{method} {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
        f"Authorization: Bearer {tenant.member}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{header}: key\x1bvalue\r\n\r\n".encode()
        + body,
    )
    assert status in (400, 422), answer
    if status == 422:
        fields = {error["field"] for error in json.loads(answer)["errors"]}
        assert fields == {header}


UNICODE_PROMPTS = [
    "🎨 a lighthouse 🏳️‍🌈 at dusk",
    "灯台と夕暮れ, 등대",
    "منارة عند الغسق ‏מגדלור‎",
    "e\u0301 a\u0308 \u0915\u094d\u0937 Z\u0335\u0321a\u0336",
    "tab\tnewline\ncarriage return\r, DEL \x7f",
]


def test_other_unicode_round_trips_through_kubernetes_and_postgresql(
    api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    """Read back as the API serves the live job, as kubectl sees it, and from the history
    (PostgreSQL) once the resource is gone."""
    specs = [
        SPEC | {"prompt": prompt, "negativePrompt": prompt[::-1]} for prompt in UNICODE_PROMPTS
    ]
    with api.client(tenant.member) as http:
        created = send_json(http, "/v1/jobs:batch", {"jobs": specs})
        assert created.status_code == 201, created.text
        ids = [job["id"] for job in created.json()["items"]]
        for job_id, spec in zip(ids, specs, strict=True):
            live = http.get(f"/v1/jobs/{job_id}").json()["spec"]
            stored = kubectl.json("get", "gj", job_id, "-n", tenant.namespace)["spec"]
            for read in (live, stored):
                assert (read["prompt"], read["negativePrompt"]) == (
                    spec["prompt"],
                    spec["negativePrompt"],
                )
        delete_jobs(kubectl, tenant.namespace, *ids)
        for job_id, spec in zip(ids, specs, strict=True):

            def from_history(job_id: str = job_id) -> dict[str, Any] | None:
                # Once the resource is gone, the API answers from the history.
                gone = kubectl.run("get", "gj", job_id, "-n", tenant.namespace, check=False)
                return http.get(f"/v1/jobs/{job_id}").json() if gone.returncode else None

            job = eventually(from_history, timeout=30, what=f"{job_id} deleted")
            assert job["spec"]["prompt"] == spec["prompt"]
            assert job["spec"]["negativePrompt"] == spec["negativePrompt"]


# -- URLs that match a pattern but not the parser that uses them ----------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://:80/hook",
        "https:///hook",
        "https://example.com:99999/hook",
        "https://example.com:abc/hook",
        "https://example.com:0/hook",
        "https://xn--zz/hook",
        "https://[::1::2]/hook",
        "javascript://example.com/",
    ],
)
def test_a_webhook_url_httpx_cannot_use_is_422_naming_it(
    api: Api, tenant: ApiTenant, url: str
) -> None:
    with api.client(tenant.member) as http:
        response = send_json(http, "/v1/jobs", SPEC | {"webhookUrl": url})
    assert set(invalid_fields(response)) == {"webhookUrl"}


# -- malformed S3 URIs and model sources --------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "s3://diffleet-uploads/{namespace}//in.png",
        "s3:///{namespace}/in.png",
        "s3://diffleet-uploads//{namespace}/in.png",
        "s3://diffleet-uploads/{namespace}/../other/in.png",
        "s3://diffleet-uploads/{namespace}/./in.png",
        "s3://diffleet-uploads/{namespace}/in.png\n",
    ],
)
@pytest.mark.parametrize("field", ["initImage", "maskImage", "controlNet.image"])
def test_a_malformed_image_uri_is_422_naming_the_field(
    api: Api, tenant: ApiTenant, uri: str, field: str
) -> None:
    good = IMAGE.format(namespace=tenant.namespace)
    bad = uri.format(namespace=tenant.namespace)
    spec = {
        "initImage": SPEC | {"mode": "img2img", "initImage": bad},
        "maskImage": SPEC | {"mode": "inpaint", "initImage": good, "maskImage": bad},
        "controlNet.image": SPEC | {"controlNet": {"model": "cn", "image": bad}},
    }[field]
    with api.client(tenant.member) as http:
        response = send_json(http, "/v1/jobs", spec)
    assert invalid_fields(response) == {field: "pattern"}


@pytest.mark.parametrize(
    "source",
    [
        "s3://diffleet-models/{namespace}//m.safetensors",
        "s3:///{namespace}/m.safetensors",
        "s3://diffleet-models/{namespace}/../other/m.safetensors",
        "s3://diffleet-models/{namespace}/m.safetensors\x00",
    ],
    ids=["empty-segment", "no-bucket", "dot-dot", "nul"],
)
def test_a_malformed_model_source_is_422_naming_it(
    api: Api, tenant: ApiTenant, source: str
) -> None:
    registration = {
        "name": "bad-source",
        "source": source.format(namespace=tenant.namespace),
        "format": "safetensors",
        "baseModel": "sd15",
    }
    with api.client(tenant.member) as http:
        response = send_json(http, "/v1/models", registration)
    assert invalid_fields(response) == {"source": "pattern"}


def safetensors_with(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    "header",
    [
        b'{"t": {"dtype": ["U8"], "shape": [2], "data_offsets": [0, 2]}}',
        b'{"t": {"dtype": "U8", "shape": {"a": 1}, "data_offsets": [0, 2]}}',
        b'{"t": {"dtype": "U8", "shape": [2], "data_offsets": [0, 18446744073709551616]}}',
        b'{"t": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"t": {"shape": [1' + b"0" * 5000 + b"]}}",
    ],
    ids=["dtype-list", "shape-object", "offset-past-u64", "nesting", "integer-5000-digits"],
)
def test_a_malformed_safetensors_header_is_422(api: Api, tenant: ApiTenant, header: bytes) -> None:
    with api.client(tenant.member) as http:
        response = http.post(
            "/v1/models:upload",
            params={"name": "bad-header", "baseModel": "sd15"},
            content=safetensors_with(header),
        )
    body = problem(response, 422)
    assert [(error["field"], error["rule"]) for error in body["errors"]] == [
        ("body", "safetensors")
    ]


# -- JWTs with headers and claims of the wrong JSON type ------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: Any, claims: Any) -> str:
    """A JWT signed with the development secret (HS256), whatever its header and claims."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(DEVELOPMENT_JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(mac.digest())}"


def good_claims(tenant: str) -> dict[str, Any]:
    return {
        "sub": "test-user",
        "tenant": tenant,
        "role": "member",
        "aud": JWT_AUDIENCE,
        "iss": ISSUER,
        "exp": int(time.time()) + 300,
    }


HS256 = {"alg": "HS256", "typ": "JWT"}
# (id, header, claims changed, or claims that are not an object): refused before the
# signature is checked (the header), then after it (the claims).
BAD_TOKENS: list[tuple[str, Any, dict[str, Any] | list[Any]]] = [
    ("alg-list", {"alg": ["HS256"]}, {}),
    ("alg-object", {"alg": {"name": "HS256"}}, {}),
    ("alg-null", {"alg": None}, {}),
    ("kid-object", HS256 | {"kid": {"id": 1}}, {}),
    ("header-list", ["HS256"], {}),
    ("sub-number", HS256, {"sub": 5}),
    ("sub-nul", HS256, {"sub": f"user{NUL}"}),
    ("tenant-list", HS256, {"tenant": ["t"]}),
    ("tenant-object", HS256, {"tenant": {"id": "t"}}),
    ("tenant-nul", HS256, {"tenant": f"t{NUL}"}),
    ("tenant-surrogate", HS256, {"tenant": f"t{SURROGATE}"}),
    ("tenant-non-latin-1", HS256, {"tenant": '☃ "quoted" \\'}),
    ("role-list", HS256, {"role": ["admin"]}),
    ("role-object", HS256, {"role": {"admin": True}}),
    ("exp-string", HS256, {"exp": "9999999999"}),
    ("exp-list", HS256, {"exp": [9999999999]}),
    ("exp-bool", HS256, {"exp": True}),
    ("aud-object", HS256, {"aud": {"diffleet-api": 1}}),
    ("iss-list", HS256, {"iss": [ISSUER]}),
    ("claims-list", HS256, ["test-user"]),
]


@pytest.mark.parametrize(
    ("header", "changes"),
    [case[1:] for case in BAD_TOKENS],
    ids=[case[0] for case in BAD_TOKENS],
)
def test_a_token_of_the_wrong_json_types_is_401(
    api: Api, tenant: ApiTenant, header: Any, changes: dict[str, Any] | list[Any]
) -> None:
    claims = changes if isinstance(changes, list) else good_claims(tenant.id) | changes
    with api.client(hand_made_token(header, claims)) as http:
        response = http.get("/v1/jobs")
    body = problem(response, 401)
    assert body["type"].endswith("/unauthenticated")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="diffleet", error="invalid_token"')
    assert challenge.isascii()


def test_the_hand_made_token_is_accepted_when_well_typed(api: Api, tenant: ApiTenant) -> None:
    """The tokens above differ from an accepted one only by what each case changes."""
    with api.client(hand_made_token(HS256, good_claims(tenant.id))) as http:
        assert http.get("/v1/jobs").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        'Bearer dfl_"quoted"',
        "Bearer " + "a" * 9000,
        "Bearer a.b.c\u00e9",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "",
    ],
    ids=["key-quoted", "too-long", "latin-1", "basic", "empty-bearer", "empty"],
)
def test_a_malformed_or_missing_credential_is_401(api: Api, authorization: str) -> None:
    headers = [(b"Authorization", authorization.encode("latin-1"))] if authorization else []
    response = httpx.get(f"{api.url}/v1/jobs", headers=headers, timeout=10)
    problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- bodies that are not JSON, query parameters out of their bounds -------------------


@pytest.mark.parametrize(
    "content",
    [
        b"model=sd15-test&prompt=x",
        b'{"model": "sd15-test", "prompt": ',
        b'{"prompt": "\xc3\x28"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"seed": 1' + b"0" * 5000 + b"}",
    ],
    ids=["form", "truncated", "not-utf8", "nesting", "integer-5000-digits"],
)
def test_a_body_that_is_not_json_is_400(api: Api, tenant: ApiTenant, content: bytes) -> None:
    with api.client(tenant.member) as http:
        response = http.post(
            "/v1/jobs", content=content, headers={"Content-Type": "application/json"}
        )
    problem(response, 400)


@pytest.mark.parametrize(
    ("path", "params", "field", "rule"),
    [
        ("/v1/jobs", {"name": "Upper-Case"}, "name", "pattern"),
        ("/v1/jobs", {"name": "a_b"}, "name", "pattern"),
        ("/v1/jobs", {"name": "-leading"}, "name", "pattern"),
        ("/v1/jobs", {"name": "a" * 254}, "name", "maxLength"),
        ("/v1/jobs", {"name": ""}, "name", "minLength"),
    ],
    ids=["upper-case", "underscore", "leading-dash", "254-characters", "empty"],
)
def test_job_name_is_a_kubernetes_object_name(
    api: Api, tenant: ApiTenant, path: str, params: dict[str, str], field: str, rule: str
) -> None:
    with api.client(tenant.member) as http:
        response = send_json(http, f"{path}?{httpx.QueryParams(params)}", SPEC)
    assert invalid_fields(response) == {field: rule}


def test_job_name_of_253_characters_is_accepted(api: Api, tenant: ApiTenant) -> None:
    name = ".".join(["a" * 63] * 4)[:253]
    with api.client(tenant.member) as http:
        response = send_json(http, f"/v1/jobs?name={name}", SPEC)
    assert response.status_code == 201, response.text
    assert response.json()["id"] == name


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"limit": "0"}, "limit", "minimum"),
        ({"limit": "501"}, "limit", "maximum"),
        ({"limit": "ten"}, "limit", "type"),
        ({"phase": "Exploded"}, "phase", "enum"),
        ({"model": "Not_A_Name"}, "model", "pattern"),
        ({"cursor": "x" * 4097}, "cursor", "maxLength"),
    ],
    ids=["limit-0", "limit-501", "limit-text", "phase", "model", "cursor-length"],
)
def test_list_query_parameters_carry_their_bounds(
    api: Api, tenant: ApiTenant, params: dict[str, str], field: str, rule: str
) -> None:
    with api.client(tenant.member) as http:
        response = http.get("/v1/jobs", params=params)
    assert invalid_fields(response) == {field: rule}


# -- bodies: exactly the documented camelCase fields and types ------------------------


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        (SPEC | {"width": "512"}, "width", "type"),
        (SPEC | {"steps": True}, "steps", "type"),
        (SPEC | {"seed": 4.0}, "seed", "type"),
        (SPEC | {"guidanceScale": "7.5"}, "guidanceScale", "type"),
        (SPEC | {"cancel": "false"}, "cancel", "type"),
        (SPEC | {"prompt": ["a", "b"]}, "prompt", "type"),
        (SPEC | {"negative_prompt": "fog"}, "negative_prompt", "additionalProperties"),
        (SPEC | {"batch_size": 2}, "batch_size", "additionalProperties"),
        (SPEC | {"mood": "ink"}, "mood", "additionalProperties"),
        (
            SPEC
            | {"controlNet": {"model": "cn", "image": "s3://b-b/c.png", "conditioning_scale": 1}},
            "controlNet.conditioning_scale",
            "additionalProperties",
        ),
        (["not", "an", "object"], "", "type"),
    ],
    ids=[
        "width-string",
        "steps-bool",
        "seed-float",
        "guidance-string",
        "cancel-string",
        "prompt-list",
        "snake-negative-prompt",
        "snake-batch-size",
        "unknown-field",
        "nested-snake-case",
        "array-body",
    ],
)
def test_a_job_body_takes_exactly_the_documented_fields_and_types(
    api: Api, tenant: ApiTenant, body: Any, field: str, rule: str
) -> None:
    with api.client(tenant.member) as http:
        response = send_json(http, "/v1/jobs", body)
    assert invalid_fields(response) == {field: rule}


def test_a_snake_case_name_is_refused_saying_the_camel_case_one(
    api: Api, tenant: ApiTenant
) -> None:
    with api.client(tenant.member) as http:
        response = send_json(http, "/v1/jobs", SPEC | {"negative_prompt": "fog"})
    [error] = problem(response, 422)["errors"]
    assert "negativePrompt" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobs": [SPEC], "priority": "pro"}, "priority"),
        ({"jobs": [SPEC | {"batch_size": 2}]}, "jobs[0].batch_size"),
        ({"jobs": [SPEC | {"width": "512"}]}, "jobs[0].width"),
    ],
    ids=["unknown-top-level", "snake-case-item", "string-width-item"],
)
def test_a_batch_body_takes_exactly_the_documented_fields(
    api: Api, tenant: ApiTenant, body: Any, field: str
) -> None:
    with api.client(tenant.member) as http:
        response = send_json(http, "/v1/jobs:batch", body)
    assert set(invalid_fields(response)) == {field}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"base_model": "sd15"}, "base_model"),
        ({"vram_gib": 4}, "vram_gib"),
        ({"vramGiB": "4"}, "vramGiB"),
        ({"sizeBytes": "100"}, "sizeBytes"),
    ],
    ids=["snake-base-model", "snake-vram", "vram-string", "size-string"],
)
def test_a_model_registration_takes_exactly_the_documented_fields(
    api: Api, tenant: ApiTenant, changes: dict[str, Any], field: str
) -> None:
    registration = {
        "name": "typed",
        "source": f"s3://diffleet-models/{tenant.namespace}/m.safetensors",
        "format": "safetensors",
        "baseModel": "sd15",
    } | changes
    with api.client(tenant.member) as http:
        response = send_json(http, "/v1/models", registration)
    assert field in invalid_fields(response)


def test_the_usage_response_is_camel_case(api: Api, tenant: ApiTenant) -> None:
    with api.client(tenant.member) as http:
        assert send_json(http, "/v1/jobs", SPEC).status_code == 201
        usage = http.get("/v1/usage").json()
    assert usage["ledger"], usage
    for entry in usage["ledger"]:
        assert set(entry) == {"id", "kind", "amount", "jobUid", "note", "createdAt"}
