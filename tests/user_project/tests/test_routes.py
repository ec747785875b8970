"""myservice's route tests, using only what README "Testing your routes" and docs/testing.md promise."""

from fastapi.testclient import TestClient
from myservice.main import app, auth

from siot_authz.testing import make_principal, override_principal


def test_admin_can_delete(siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    with TestClient(app) as client:
        response = client.delete("/v1/project?name=x", headers=siot_auth_headers(groups=["admin"]))
    assert response.status_code == 200


def test_viewer_cannot_delete(siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    with TestClient(app) as client:
        response = client.delete("/v1/project?name=x", headers=siot_auth_headers(groups=["viewer"]))
    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "missing_group"


def test_me_accepts_raw_and_bearer_tokens(siot_trust_local_issuer, siot_auth_headers):
    siot_trust_local_issuer(app, auth)
    with TestClient(app) as client:
        for bearer in (True, False):
            response = client.get("/v1/me", headers=siot_auth_headers(username="ada", bearer=bearer))
            assert response.json() == {"status": "ok", "user": "ada", "groups": []}


def test_expired_token_is_refused(siot_trust_local_issuer, siot_mint):
    siot_trust_local_issuer(app, auth)
    with TestClient(app) as client:
        response = client.get("/v1/me", headers={"Authorization": siot_mint(expires_in=-60)})
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "token_expired"


def test_no_token_is_refused(siot_trust_local_issuer):
    siot_trust_local_issuer(app, auth)
    with TestClient(app) as client:
        assert client.get("/v1/me").status_code == 401


def test_me_shows_who_is_calling():
    with override_principal(app, auth, make_principal("bob", groups=("viewer",))), TestClient(app) as client:
        response = client.get("/v1/me")
    assert response.json() == {"status": "ok", "user": "bob", "groups": ["viewer"]}


def test_the_fixture_form_of_override_principal(siot_override_principal):
    siot_override_principal(app, auth, "bob", groups=("admin",))
    with TestClient(app) as client:
        assert client.delete("/v1/project?name=x").status_code == 200


def test_no_token_gets_401_without_the_real_config():
    # No override and no lifespan: nothing reads ~/.simpleiot, which this machine may not have.
    response = TestClient(app).get("/v1/me")
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "missing_token"
