"""The characters a string of a spec may hold: any Unicode but NUL, the C0 control
characters other than tab, newline and carriage return, and lone surrogates.

Those characters break what a string goes through: PostgreSQL's text and jsonb refuse
NUL, S3 metadata and PNG text chunks refuse controls, and a lone surrogate cannot be
encoded as UTF-8 at all. Every string field of the resources carries
`NO_CONTROL_CHARACTERS`; free text is `Text`, whose `TEXT_PATTERN` the CRDs carry, so
kubectl users are refused the same characters (a lone surrogate never reaches the API
server's schema: its JSON decoder turns it into U+FFFD).

Names that several resources share are DNS labels: `PoolName` and `GpuType`.
"""

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"
REFUSED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
ERROR_TYPE = "control_character"


def refuse_control_characters(value: Any) -> Any:
    """`value` unchanged, unless it is a string holding a refused character.

    Runs before the string's own checks, so that its pattern (or PostgreSQL, or a UTF-8
    encoder) never sees such a character and the message says which one it was."""
    if isinstance(value, str):
        found = REFUSED.search(value)
        if found is not None:
            raise PydanticCustomError(
                ERROR_TYPE,
                "{character} at character {index}: NUL, control characters other than tab,"
                " newline and carriage return, and lone surrogates are not allowed",
                {"character": f"U+{ord(found.group()):04X}", "index": found.start()},
            )
    return value


NO_CONTROL_CHARACTERS = BeforeValidator(refuse_control_characters)

Text = Annotated[str, Field(pattern=TEXT_PATTERN), NO_CONTROL_CHARACTERS]
"""Free text: every character but those refused above."""

# A DNS label (RFC 1123), as Kubernetes names a Service: it can be an object's name, a
# label value and part of a queue name.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[
    str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN), NO_CONTROL_CHARACTERS
]

PoolName = DnsLabel
"""The name of a GPU pool: its GPUPool's name, the pool a worker announces, an entry of
ModelCache spec.pools."""

GpuType = DnsLabel
"""A type of GPU (h100, a100, t4, ...): GPUPool spec.gpuType, what a worker announces,
what GenerationJob spec.gpuClass names."""
