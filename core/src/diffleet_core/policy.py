"""A namespace's content policy and watermark: what the operator, the API and the worker
agree on.

The policy is the ConfigMap `diffleet-policy` in the job's namespace, else the one in the
platform's namespace (the namespace's own replaces the platform's; they are not merged):

    data:
      denyList: |          # one rule per line; blank lines and lines starting with # skipped
        red panda          # a phrase, matched on whole words, case-insensitively
      safetyModel: tiny-safety   # a ModelCache of type safety that classifies the outputs

A prompt (not the negative prompt) matching a deny rule is refused: the API answers 422
and the operator fails a job created with kubectl (reason PromptRejected). An output the
safety model flags fails its job (reason ContentRejected) and is never uploaded.
"""

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

POLICY_CONFIGMAP = "diffleet-policy"
DENY_LIST_KEY = "denyList"
SAFETY_MODEL_KEY = "safetyModel"

# A namespace annotated `diffleet.io/watermark: "true"` has an invisible watermark put
# into its jobs' outputs.
WATERMARK_ANNOTATION = "diffleet.io/watermark"
# The 48-bit message that diffusers' SDXL watermarker embeds (the same as Stability AI's),
# so that tools that look for it find it.
WATERMARK_MESSAGE = 0b101100111110110010010000011110111011000110011110
WATERMARK_BITS = [int(bit) for bit in f"{WATERMARK_MESSAGE:048b}"]


def normalized(text: str) -> str:
    """`text` as rules and prompts are compared: NFKC (fullwidth and ligature forms fold
    into plain ones) and case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True)
class Policy:
    deny_rules: tuple[str, ...] = ()
    safety_model: str | None = None
    # Where it came from ("namespace/name"); empty when there is no policy.
    source: str = ""

    @classmethod
    def from_configmap(cls, data: Mapping[str, str] | None, source: str = "") -> "Policy":
        data = data or {}
        lines = (line.strip() for line in data.get(DENY_LIST_KEY, "").splitlines())
        rules = tuple(line for line in lines if line and not line.startswith("#"))
        safety = data.get(SAFETY_MODEL_KEY, "").strip() or None
        return cls(rules, safety, source)

    def denied(self, prompt: str) -> str | None:
        """The first rule the prompt matches, else None. A rule matches as whole words:
        `cat` matches "a Cat." but not "concatenate"."""
        text = normalized(prompt)
        for rule in self.deny_rules:
            words = r"\s+".join(re.escape(word) for word in normalized(rule).split())
            if re.search(rf"(?<!\w){words}(?!\w)", text):
                return rule
        return None


def watermark_on(annotations: Mapping[str, str]) -> bool:
    return annotations.get(WATERMARK_ANNOTATION, "").strip().lower() == "true"
