"""The fleet's scrape config: one job per device with its own token file, file_sd targets with host labels, every
value that reaches the YAML checked once, files written atomically; checked by promtool when it is installed."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from edgekit import state
from edgekit.errors import UsageError
from edgekit.metrics import tokens
from edgekit.metrics.scrape import (ScrapeTarget, scrape_config, targets_from_state, targets_json,
                                    write_scrape_config)


def fleet(tmp_path) -> list[ScrapeTarget]:
    return [ScrapeTarget("orin", "10.0.0.5", 9838, "orin-nano-8gb", "smollm2", str(tokens.save_token("orin", "ekm-a"))),
            ScrapeTarget("agx.lab", "agx.lab.example", 9900, "agx-orin-64gb", "llama-3-8b", str(tmp_path / "agx.tok")),
            ScrapeTarget("v6", "fd00::7", board="orin-nx-16gb")]


def test_one_job_per_device_each_with_its_token_and_all_relabelled_to_job_edgekit(tmp_path):
    config, targets = scrape_config(fleet(tmp_path), "/srv/prom/edgekit-targets.json")
    doc = yaml.safe_load(config)
    assert doc["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert list(jobs) == ["edgekit-orin", "edgekit-agx.lab", "edgekit-v6"]
    orin = jobs["edgekit-orin"]
    assert orin["scrape_interval"] == "5s" and orin["scrape_timeout"] == "4000ms" and orin["metrics_path"] == "/metrics"
    assert orin["authorization"] == {"type": "Bearer", "credentials_file": str(tokens.token_path("orin"))}
    assert orin["file_sd_configs"] == [{"files": ["/srv/prom/edgekit-targets.json"]}]
    assert orin["relabel_configs"] == [{"source_labels": ["target"], "regex": "orin", "action": "keep"},
                                       {"target_label": "job", "replacement": "edgekit"}]
    assert jobs["edgekit-agx.lab"]["relabel_configs"][0]["regex"] == "agx\\.lab"       # a regex: the dot escaped
    assert "authorization" not in jobs["edgekit-v6"]                                    # an exporter without a token
    assert json.loads(targets) == [
        {"targets": ["10.0.0.5:9838"], "labels": {"target": "orin", "board": "orin-nano-8gb",
                                                  "default_model": "smollm2"}},
        {"targets": ["agx.lab.example:9900"], "labels": {"target": "agx.lab", "board": "agx-orin-64gb",
                                                         "default_model": "llama-3-8b"}},
        {"targets": ["[fd00::7]:9838"], "labels": {"target": "v6", "board": "orin-nx-16gb"}}]


def test_the_include_file_has_only_scrape_configs_and_the_interval_is_a_parameter(tmp_path):
    config, _ = scrape_config(fleet(tmp_path)[:1], interval="15s", standalone=False)
    doc = yaml.safe_load(config)
    assert list(doc) == ["scrape_configs"] and doc["scrape_configs"][0]["scrape_timeout"] == "12000ms"
    assert yaml.safe_load(scrape_config([])[0]) == {"global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                                                    "scrape_configs": []}


@pytest.mark.parametrize("bad, match", [
    (ScrapeTarget("orin\n- job_name: evil", "10.0.0.5"), "target name"),
    (ScrapeTarget('or"in', "10.0.0.5"), "target name"),
    (ScrapeTarget("orin", "10.0.0.5\n  - targets: [evil]"), "neither an IP address nor a host name"),
    (ScrapeTarget("orin", "10.0.0.5 9100"), "neither an IP address nor a host name"),
    (ScrapeTarget("orin", "10.0.0.5", 0), "not a TCP port"),
    (ScrapeTarget("orin", "10.0.0.5", token_file="relative/token"), "absolute path"),
    (ScrapeTarget("orin", "10.0.0.5", token_file="/tmp/x\ny"), "absolute path"),
    (ScrapeTarget("orin", "10.0.0.5", board="orin\x00"), "not a usable label value"),
])
def test_every_value_that_reaches_the_yaml_is_checked(bad, match):
    with pytest.raises(UsageError, match=match):
        scrape_config([bad])


def test_a_bad_interval_or_a_repeated_target_is_refused():
    with pytest.raises(UsageError, match="Prometheus duration"):
        scrape_config([], interval="5 s\nevil: 1")
    with pytest.raises(UsageError, match="given twice"):
        scrape_config([ScrapeTarget("orin", "10.0.0.5"), ScrapeTarget("orin", "10.0.0.6")])


def test_label_values_with_quotes_stay_data(tmp_path):
    odd = ScrapeTarget("orin", "10.0.0.5", board='nano "dev" kit: 8GB', model="a\\b")
    config, targets = scrape_config([odd])
    assert json.loads(targets)[0]["labels"] == {"target": "orin", "board": 'nano "dev" kit: 8GB',
                                                "default_model": "a\\b"}
    assert "nano" not in config                       # labels live in the targets file only


def test_the_writer_writes_atomically_and_the_tokens_stay_private(tmp_path):
    out = tmp_path / "prom"
    paths = write_scrape_config(out, fleet(tmp_path)[:1])
    assert sorted(p.name for p in out.iterdir()) == ["edgekit-scrape.yml", "edgekit-targets.json", "prometheus.yml"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in paths.values())
    doc = yaml.safe_load(paths["config"].read_text())
    assert doc["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(out.resolve() / "edgekit-targets.json")]
    assert "global" not in yaml.safe_load(paths["include"].read_text())
    assert json.loads(paths["targets"].read_text())[0]["targets"] == ["10.0.0.5:9838"]
    assert oct(tokens.token_path("orin").stat().st_mode & 0o777) == "0o600"
    write_scrape_config(out, [])                      # rewriting replaces, leaving no temp files behind
    assert sorted(p.name for p in out.iterdir()) == ["edgekit-scrape.yml", "edgekit-targets.json", "prometheus.yml"]
    assert json.loads(paths["targets"].read_text()) == []


def test_targets_come_from_what_provision_recorded():
    state.save("orin", {"url": "http://10.0.0.5:8080", "host": "0.0.0.0", "port": 8080, "model": "smollm2"})
    tokens.save_token("orin", "ekm-a")
    state.save("nx", {"url": "http://nx.local:8080", "model": "gemma3-270m", "board": "orin-nx-16gb",
                      "exporter_port": 9900})
    assert targets_from_state(["orin", "nx"]) == [
        ScrapeTarget("orin", "10.0.0.5", 9838, "", "smollm2", str(tokens.token_path("orin"))),
        ScrapeTarget("nx", "nx.local", 9900, "orin-nx-16gb", "gemma3-270m", None)]
    with pytest.raises(UsageError, match="has not provisioned ghost") as e:
        targets_from_state(["ghost"])
    assert e.value.hint == "run `edgekit provision ghost` first"
    assert targets_json([]) == "[]\n"


@pytest.mark.needs("promtool")
def test_promtool_accepts_the_config(tmp_path):
    hosts = fleet(tmp_path)
    (tmp_path / "agx.tok").write_text("ekm-b\n")
    paths = write_scrape_config(tmp_path / "prom", hosts)
    p = subprocess.run(["promtool", "check", "config", str(paths["config"])], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
