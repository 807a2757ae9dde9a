"""diffleet's contract, shared by the operator, the GPU worker and the API.

Everything two components must agree on lives here, once: custom resource models,
queue names and message schemas, the S3 key scheme and the settings.
"""

API_GROUP = "diffleet.io"
API_VERSION = "v1alpha1"
SYSTEM_NAMESPACE = "diffleet-system"
TIER_LABEL = "diffleet.io/tier"
# Namespace annotations for fair share within a tier: the namespace's dispatch weight
# (positive integer, default 1) and its limit on jobs running at once (unset: none).
SHARE_WEIGHT_ANNOTATION = "diffleet.io/share-weight"
MAX_RUNNING_JOBS_ANNOTATION = "diffleet.io/max-running-jobs"
