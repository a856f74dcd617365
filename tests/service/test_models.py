"""The /models routes: the checkpoint store's models, versions and aliases over real HTTP.

The store starts as conftest's template: digits 1 (untrained) and 2 (trained), plain 1,
styles 1, each test on its own copy.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from aae.checkpoints import publish_model


def test_list_models(client):
    response = client.get("/models")
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"name": "digits", "versions": [1, 2], "aliases": {"latest": 2}},
        {"name": "plain", "versions": [1], "aliases": {"latest": 1}},
        {"name": "styles", "versions": [1], "aliases": {"latest": 1}},
    ]


def test_list_follows_the_store(client, store, trained_models):
    publish_model(store, "fresh", trained_models["plain"].model, {})
    store.delete_version("plain", 1)
    assert [m["name"] for m in client.get("/models").json()] == ["digits", "fresh", "styles"]


def test_model_detail_has_every_version(client):
    response = client.get("/models/digits")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "digits" and body["versions"] == [1, 2]
    assert body["aliases"] == {"latest": 2}
    assert [v["version"] for v in body["version_details"]] == [1, 2]
    assert [v["aliases"] for v in body["version_details"]] == [[], ["latest"]]
    assert body["version_details"][0]["metrics"]["note"] == "untrained"


@pytest.mark.parametrize("name", ["digits", "plain", "styles"])
def test_version_has_config_metrics_created_at_and_aliases(client, trained_models, name):
    version = 2 if name == "digits" else 1
    response = client.get(f"/models/{name}/versions/{version}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["version"], body["aliases"]) == (name, version, ["latest"])
    cfg = trained_models[name].model.cfg
    assert body["config"] == cfg.to_dict()
    metrics = trained_models[name].metrics
    assert body["metrics"]["test_reconstruction_loss"] == pytest.approx(
        metrics["test_reconstruction_loss"])
    assert body["metrics"]["mode"] == cfg.mode.value
    assert body["metrics"]["steps"] == metrics["steps"] > 0
    fidelity = body["metrics"]["sample_fidelity"]  # by its own classifier, where it has one
    if cfg.has_categorical:
        assert 0 <= fidelity["mean"] <= 1 and len(fidelity["per_class"]) == 10
    else:
        assert fidelity is None
    created = datetime.fromisoformat(body["created_at"])
    assert created.tzinfo is not None and body["metrics"]["created_at"] == body["created_at"]


@pytest.mark.parametrize("version, number", [("1", 1), ("2", 2), ("latest", 2)])
def test_version_by_number_or_alias(client, version, number):
    response = client.get(f"/models/digits/versions/{version}")
    assert response.status_code == 200, response.text
    assert response.json()["version"] == number


@pytest.mark.parametrize("target, number", [(1, 1), ("1", 1), ("latest", 2)])
def test_put_alias(client, target, number):
    response = client.put("/models/digits/aliases/production", json={"version": target})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == number and "production" in body["aliases"]
    assert client.get("/models/digits").json()["aliases"] == {"production": number,
                                                              "latest": 2}
    assert client.get("/models/digits/versions/production").json()["version"] == number


def test_alias_set_to_another_alias_keeps_its_number(client, store, trained_models):
    """An alias set from "latest" (or another alias) holds the number it meant then."""
    client.put("/models/digits/aliases/staging", json={"version": "latest"})
    client.put("/models/digits/aliases/production", json={"version": "staging"})
    publish_model(store, "digits", trained_models["digits"].model, {})
    aliases = client.get("/models/digits").json()["aliases"]
    assert aliases == {"staging": 2, "production": 2, "latest": 3}


def test_moving_an_alias(client):
    client.put("/models/digits/aliases/production", json={"version": 1})
    client.put("/models/digits/aliases/production", json={"version": 2})
    details = client.get("/models/digits").json()["version_details"]
    assert [d["aliases"] for d in details] == [[], ["latest", "production"]]


def test_delete_refused_while_an_alias_points_at_the_version(client, problem):
    assert client.put("/models/digits/aliases/production", json={"version": 1}).status_code == 200
    problem(client.delete("/models/digits/versions/1"), 409,
            "model 'digits' version 1 is used by alias(es) 'production'; move or delete "
            "them first")
    assert client.get("/models/digits").json()["versions"] == [1, 2]
    assert client.put("/models/digits/aliases/production", json={"version": 2}).status_code == 200
    response = client.delete("/models/digits/versions/1")
    assert response.status_code == 204 and response.content == b""
    assert client.get("/models/digits").json()["versions"] == [2]
    problem(client.get("/models/digits/versions/1"), 404, "model 'digits' has no version 1")
    problem(client.delete("/models/digits/versions/1"), 404, "model 'digits' has no version 1")


def test_deleted_number_is_never_reused(client, store, trained_models):
    assert client.delete("/models/digits/versions/2").status_code == 204
    assert publish_model(store, "digits", trained_models["digits"].model, {}) == 3
    assert client.get("/models/digits").json()["versions"] == [1, 3]


def test_deleting_the_last_version_removes_the_model(client, problem):
    assert client.delete("/models/plain/versions/1").status_code == 204
    problem(client.get("/models/plain"), 404, "no model named 'plain'")
    assert "plain" not in [m["name"] for m in client.get("/models").json()]


@pytest.mark.parametrize("method, url, body, detail", [
    ("GET", "/models/nope", None, "no model named 'nope'"),
    ("GET", "/models/nope/versions/1", None, "no model named 'nope'"),
    ("GET", "/models/digits/versions/9", None, "model 'digits' has no version 9"),
    ("GET", "/models/digits/versions/staging", None, "model 'digits' has no alias 'staging'"),
    ("PUT", "/models/digits/aliases/production", {"version": 9},
     "model 'digits' has no version 9"),
    ("PUT", "/models/digits/aliases/production", {"version": "staging"},
     "model 'digits' has no alias 'staging'"),
    ("PUT", "/models/nope/aliases/production", {"version": 1}, "no model named 'nope'"),
    ("DELETE", "/models/digits/versions/9", None, "model 'digits' has no version 9"),
    ("DELETE", "/models/nope/versions/1", None, "no model named 'nope'"),
])
def test_not_found_is_404(client, problem, method, url, body, detail):
    problem(client.request(method, url, json=body), 404, detail)


NAME_RULE = "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


@pytest.mark.parametrize("method, url, body, detail", [
    ("GET", "/models/-bad", None, f"invalid model name '-bad': {NAME_RULE}"),
    ("GET", "/models/bad%20name", None, f"invalid model name 'bad name': {NAME_RULE}"),
    ("GET", "/models/a..b/versions/1", None, f"invalid model name 'a..b': {NAME_RULE}"),
    ("GET", "/models/digits/versions/0", None,
     "invalid version 0: versions are positive integers"),
    ("GET", "/models/digits/versions/_x", None, f"invalid alias '_x': {NAME_RULE}"),
    ("PUT", "/models/digits/aliases/latest", {"version": 1},
     "'latest' is computed by the store and cannot be set or deleted"),
    ("PUT", "/models/digits/aliases/123", {"version": 1},
     "invalid alias '123': an alias cannot be all digits"),
    ("PUT", "/models/digits/aliases/bad!", {"version": 1}, f"invalid alias 'bad!': {NAME_RULE}"),
    ("PUT", "/models/-bad/aliases/production", {"version": 1},
     f"invalid model name '-bad': {NAME_RULE}"),
    ("PUT", "/models/digits/aliases/production", {"version": 0},
     "invalid version 0: versions are positive integers"),
    ("DELETE", "/models/-bad/versions/1", None, f"invalid model name '-bad': {NAME_RULE}"),
])
def test_invalid_name_is_422(client, problem, method, url, body, detail):
    problem(client.request(method, url, json=body), 422, detail)


@pytest.mark.parametrize("method, url, body", [
    ("DELETE", "/models/digits/versions/0", None),
    ("DELETE", "/models/digits/versions/latest", None),
    ("GET", "/models/" + "a" * 65, None),
    ("PUT", "/models/digits/aliases/production", {"version": 1, "extra": True}),
    ("PUT", "/models/digits/aliases/production", {}),
    ("PUT", "/models/digits/aliases/production", {"version": [1]}),
])
def test_invalid_request_is_422_with_its_errors(client, problem, method, url, body):
    body = problem(client.request(method, url, json=body), 422)
    assert body["title"] == "Invalid request" and body["errors"]
