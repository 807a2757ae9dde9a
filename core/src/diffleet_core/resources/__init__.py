"""The custom resources of diffleet.io/v1alpha1 as Python models.

crds/ holds the CRD schemas that the API server enforces; these models are the one
Python definition of the same fields, bounds and defaults, used by the operator, the
worker and the API. tests/core/test_crd_agreement.py proves that the two agree.
"""
