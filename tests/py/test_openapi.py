"""GET /v1/openapi.json passes a third-party OpenAPI 3.1 validator (openapi-spec-validator).

tests/it/openapi.rs checks the same document from Rust (references, coverage of every served
route, answers against schemas); this is the independent check that it is valid OpenAPI 3.1
by someone else's reading of the specification.
"""

from __future__ import annotations

import httpx
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
import pytest


def test_document_is_valid_openapi_3_1(gateway):
    r = httpx.get(f"{gateway.admin_url}/v1/openapi.json", timeout=10)  # no token: public
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.1."), doc["openapi"]
    validate(doc)  # raises on any violation (picks the 3.1 validator from `openapi`)
    assert "/v1/workspaces/{ws}/tokens" in doc["paths"]


def test_the_validator_rejects_a_broken_document(gateway):
    """So that the test above cannot pass on a validator that accepts anything."""
    doc = httpx.get(f"{gateway.admin_url}/v1/openapi.json", timeout=10).json()
    doc["paths"]["/v1/workspaces/{ws}/tokens"]["get"]["responses"]["200"] = {"content": {}}  # no description
    with pytest.raises(OpenAPIValidationError):
        validate(doc)
