#!/usr/bin/env bash
# The main job end to end, on the local stack that `make up` started (operator, one CPU
# worker, the API) with the models of `make models`: a txt2img, an img2img and an
# outpaint GenerationJob applied with kubectl, an img2vid job that animates the img2img's
# init image into an MP4 (tiny-svd: 8 frames of noise), then a txt2img job POSTed to the
# REST API by a tenant and an upscale of its output (tiny-esrgan-x4, WebP); micro-shapes
# draws the images. They land in ./out/.
set -euo pipefail
LOG_TAG=demo
source "$(dirname "$0")/lib.sh"
eval "$("$ROOT/hack/stack.sh" env)"

namespace=diffleet-demo
jobs=(red-circle blue-square-repainted blue-square-outpainted blue-square-animated)
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Finished jobs keep their names until their TTL: start again from scratch.
kubectl delete generationjobs --all -n "$namespace" --wait=true >/dev/null

log "uploading the init image of the img2img, outpaint and img2vid examples (a blue square on white)"
"$ROOT/.venv/bin/python" - <<'PY'
import io

import boto3
from PIL import Image, ImageDraw

image = Image.new("RGB", (64, 64), "white")
ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill=(30, 60, 220))
buffer = io.BytesIO()
image.save(buffer, format="PNG")
boto3.client("s3").put_object(
    Bucket="diffleet-uploads", Key="examples/blue-square.png", Body=buffer.getvalue()
)
PY

for manifest in txt2img img2img outpaint img2vid; do
  log "kubectl apply -f manifests/examples/$manifest.yaml"
  kubectl apply -n "$namespace" -f "$ROOT/manifests/examples/$manifest.yaml"
done
for job in "${jobs[@]}"; do
  kubectl wait "generationjob/$job" -n "$namespace" --timeout=300s \
    --for=jsonpath='{.status.phase}'=Succeeded >/dev/null ||
    die "job $job did not succeed: $(kubectl get generationjob "$job" -n "$namespace" -o jsonpath='{.status}')"
done
kubectl get generationjobs -n "$namespace"

log "the images and the clip, and the parameters read back from each file (the outpaint is 128x64: the 64x64 square and 64 new pixels on its right; the clip is tiny-svd's noise):"
(cd "$ROOT" && .venv/bin/python -m hack.demo_outputs out "$namespace" "${jobs[@]}")

log "the same door for product clients: tenant 'demo' (namespace $namespace), an API key, a job and an upscale of its output"
admin="$ROOT/.venv/bin/diffleet-admin"
# grep without -q reads the whole list: with -q it stops at the match, and the list's
# writer (many tenants after a test run) dies of the closed pipe, failing the pipeline.
"$admin" tenants list | grep "^demo[[:space:]]" >/dev/null ||
  "$admin" tenants create demo --namespace "$namespace" --tier pro --credits 100
api_key="$("$admin" keys create demo --name demo 2>/dev/null)"
(cd "$ROOT" && DIFFLEET_API_KEY="$api_key" .venv/bin/python -m hack.demo_api out green-triangle)
kubectl get generationjob green-triangle green-triangle-x4 -n "$namespace"
platform_key="$("$admin" platform-keys create --name demo 2>/dev/null)"
log "the web console: $DIFFLEET_API_URL/console/ (Generate, Gallery, Usage: log in with the tenant's key $api_key; Fleet: with the platform key $platform_key). Keys of this local stack only; the page keeps them in memory, so a reload asks again"
log "done; 'eval \"\$(make -s env)\"' points your shell at the stack, 'make down' stops it"
